"""The HEC sink against the HEC emulator: delivery, 413 split, poison isolation, holds, TLS.

Each test asserts what the emulator finally indexed: nothing lost, only the poison
events failed, nothing twice.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from structlog.testing import capture_logs

from sinks.base import (
    PartialDeliveryError,
    PermanentSinkError,
    RetryableSinkError,
    SinkUnavailableError,
)
from tests.fakes.hec import TOKEN, HecEmulator, hec, hec_ack, make_event
from tests.harness import free_port
from tests.sinks._hec import anyio_backend, assert_indexed_once, batch_of, ids, running

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


# -- delivery -----------------------------------------------------------------------------


async def test_delivers_a_gzip_batch_with_metadata(hec: HecEmulator, tmp_path: Path) -> None:
    """All events indexed once, gzip on the wire, sourcetype by category, flat fields."""
    batch = [make_event(1, actor="agent:a", domain="pay"), make_event(2, "rule.changed")]
    async with running(hec.url, tmp_path, index="main") as sink:
        await sink.send(batch)
    assert_indexed_once(hec, ids(batch))
    first, second = hec.snapshot()
    assert (first.sourcetype, second.sourcetype) == ("bighub:decision", "bighub:rule")
    assert first.fields["actor"] == "agent:a"
    assert first.fields["domain"] == "pay"
    assert first.time == 1795507200.123
    assert first.event["payload"]["event_id"] == "evt-1"
    assert [r.gzip for r in hec.event_posts()] == [True]


async def test_compression_can_be_turned_off(hec: HecEmulator, tmp_path: Path) -> None:
    """compression = "none" sends plain JSON."""
    async with running(hec.url, tmp_path, compression="none") as sink:
        await sink.send(batch_of(3))
    assert [r.gzip for r in hec.event_posts()] == [False]
    assert_indexed_once(hec, [f"evt-{i}" for i in range(3)])


async def test_a_big_batch_goes_as_several_requests(hec: HecEmulator, tmp_path: Path) -> None:
    """max_request_bytes bounds each request; order and count are kept."""
    batch = batch_of(60, note="x" * 600)
    async with running(hec.url, tmp_path, max_request_bytes=16_384) as sink:
        await sink.send(batch)
    posts = hec.event_posts()
    assert len(posts) > 2
    assert sum(r.events for r in posts) == 60
    assert hec.event_ids() == ids(batch)


async def test_a_large_batch_is_sent_in_pieces_in_order(hec: HecEmulator, tmp_path: Path) -> None:
    """1,000 events go as a small first piece and the rest (encoded while the first is in
    flight): every event indexed once, in batch order."""
    batch = batch_of(1000)
    async with running(hec.url, tmp_path) as sink:
        await sink.send(batch)
    assert [r.events for r in hec.event_posts()] == [250, 750]
    assert hec.event_ids() == ids(batch)


async def test_large_events_are_encoded_and_gzipped_in_bounded_steps(
    hec: HecEmulator, tmp_path: Path
) -> None:
    """Events of ~300 KB: encoding yields to the loop after each, a first request too big
    to gzip in place goes to a thread; every event indexed once, in order."""
    batch = batch_of(6, note="z" * 300_000)
    async with running(hec.url, tmp_path) as sink:
        await sink.send(batch)
    assert all(r.gzip for r in hec.event_posts())
    assert hec.event_ids() == ids(batch)
    assert_indexed_once(hec, ids(batch))


# -- 413 -----------------------------------------------------------------------------------


async def test_413_splits_the_batch_and_resends_the_halves(tmp_path: Path) -> None:
    """A request over HEC's max_content_length is halved until it fits; nothing is lost."""
    emulator = HecEmulator(max_content_length=8_000).start()
    try:
        batch = batch_of(40, note="y" * 500)
        async with running(emulator.url, tmp_path, compression="none") as sink:
            await sink.send(batch)
        statuses = [r.status for r in emulator.event_posts()]
        assert 413 in statuses
        assert statuses[-1] == 200
        assert emulator.event_ids() == ids(batch)
        assert_indexed_once(emulator, ids(batch))
    finally:
        emulator.stop()


async def test_an_event_too_big_alone_is_the_only_failure(tmp_path: Path) -> None:
    """A single event over max_content_length is dead-lettered; its neighbours arrive."""
    emulator = HecEmulator(max_content_length=4_000).start()
    try:
        batch = batch_of(6)
        batch[3] = make_event(3, note="z" * 10_000)
        async with running(emulator.url, tmp_path, compression="none") as sink:
            with pytest.raises(PartialDeliveryError) as caught:
                await sink.send(batch)
        assert set(caught.value.failures) == {3}
        assert isinstance(caught.value.failures[3], PermanentSinkError)
        assert "max_content_length" in str(caught.value.failures[3])
        assert_indexed_once(emulator, [e for i, e in enumerate(ids(batch)) if i != 3])
    finally:
        emulator.stop()


# -- poison events ---------------------------------------------------------------------------


@pytest.mark.parametrize("code", [6, 12, 13, 15])
async def test_poison_events_alone_are_dead_lettered(
    hec: HecEmulator, tmp_path: Path, code: int
) -> None:
    """invalid-event-number: only the bad events fail (permanent); the rest land once."""
    batch = batch_of(30)
    hec.poison_ids = {"evt-4": code, "evt-17": code}
    async with running(hec.url, tmp_path) as sink:
        with pytest.raises(PartialDeliveryError) as caught:
            await sink.send(batch)
    assert set(caught.value.failures) == {4, 17}
    assert all(isinstance(e, PermanentSinkError) for e in caught.value.failures.values())
    assert f"code {code}" in str(caught.value.failures[4])
    assert_indexed_once(hec, [i for i in ids(batch) if i not in {"evt-4", "evt-17"}])
    # One request per poison event plus the first: HEC's number is used, not a blind bisect.
    assert len(hec.event_posts()) == 3


async def test_poison_at_index_k_of_the_next_request(hec: HecEmulator, tmp_path: Path) -> None:
    """The fault "poison at index k": k fails, those before are kept, those after resent."""
    batch = batch_of(10)
    hec.poison_at = (6, 6)
    async with running(hec.url, tmp_path) as sink:
        with pytest.raises(PartialDeliveryError) as caught:
            await sink.send(batch)
    assert set(caught.value.failures) == {6}
    assert_indexed_once(hec, [i for i in ids(batch) if i != "evt-6"])


async def test_rejection_without_event_number_is_bisected(hec: HecEmulator, tmp_path: Path) -> None:
    """When HEC does not say which event is bad, bisecting finds it and only it."""
    hec.report_invalid_event = False
    hec.keep_prefix = False
    hec.poison_ids = {"evt-9": 6, "evt-21": 12}
    batch = batch_of(32)
    async with running(hec.url, tmp_path) as sink:
        with pytest.raises(PartialDeliveryError) as caught:
            await sink.send(batch)
    assert set(caught.value.failures) == {9, 21}
    assert_indexed_once(hec, [i for i in ids(batch) if i not in {"evt-9", "evt-21"}])


async def test_a_batch_of_only_poison_fails_without_retry(hec: HecEmulator, tmp_path: Path) -> None:
    """Every event rejected: each one is permanent, nothing is indexed."""
    hec.poison_ids = {"evt-0": 13, "evt-1": 13}
    async with running(hec.url, tmp_path) as sink:
        with pytest.raises(PartialDeliveryError) as caught:
            await sink.send(batch_of(2))
    assert all(isinstance(e, PermanentSinkError) for e in caught.value.failures.values())
    assert hec.event_ids() == []


# -- holds and retries -------------------------------------------------------------------------


@pytest.mark.parametrize("code", [1, 2, 3, 4, 7, 10, 11, 14, 16])
async def test_refusals_hold_the_batch(hec: HecEmulator, tmp_path: Path, code: int) -> None:
    """Token / auth / index / channel codes: SinkUnavailableError, nothing indexed."""
    hec.inject.append(code)
    async with running(hec.url, tmp_path) as sink:
        with pytest.raises(SinkUnavailableError, match=f"code {code}"):
            await sink.send(batch_of(5))
        assert hec.event_ids() == []
        await sink.send(batch_of(5))  # the operator fixed it: the same events go through
    assert_indexed_once(hec, [f"evt-{i}" for i in range(5)])


@pytest.mark.parametrize("code", [5, 8])
async def test_server_errors_retry(hec: HecEmulator, tmp_path: Path, code: int) -> None:
    """8 (and 5): RetryableSinkError (charged, backoff), not a hold."""
    hec.inject.append(code)
    async with running(hec.url, tmp_path) as sink:
        with pytest.raises(RetryableSinkError) as caught:
            await sink.send(batch_of(5))
        assert not isinstance(caught.value, SinkUnavailableError)
        await sink.send(batch_of(5))
    assert_indexed_once(hec, [f"evt-{i}" for i in range(5)])


@pytest.mark.parametrize("code", [9, 18, 19, 20])
async def test_busy_or_unhealthy_hec_holds_without_charging(
    hec: HecEmulator, tmp_path: Path, code: int
) -> None:
    """9 (busy) and 18-20 (unhealthy) are an outage: SinkUnavailableError (events wait,
    no attempt charged), logged as busy, not as a refusal; the events go through after."""
    hec.inject.append(code)
    with capture_logs() as logs:
        async with running(hec.url, tmp_path) as sink:
            with pytest.raises(SinkUnavailableError, match=f"code {code}"):
                await sink.send(batch_of(5))
            await sink.send(batch_of(5))
    assert_indexed_once(hec, [f"evt-{i}" for i in range(5)])
    assert [e["log_level"] for e in logs if e["event"] == "splunk_hec_busy"] == ["warning"]
    assert not [e for e in logs if e["event"] == "splunk_hec_refused"]


async def test_an_undocumented_code_is_treated_by_its_http_status(
    hec: HecEmulator, tmp_path: Path
) -> None:
    """A code Splunk does not document: with 503 the events wait uncharged, with 500 the
    attempt is charged, with 200 the events count as delivered."""
    hec.inject_answers.extend([(23, 503), (99, 500)])
    async with running(hec.url, tmp_path) as sink:
        with pytest.raises(SinkUnavailableError, match="code 23"):
            await sink.send(batch_of(2))
        with pytest.raises(RetryableSinkError) as caught:
            await sink.send(batch_of(2))
        assert not isinstance(caught.value, SinkUnavailableError)
        await sink.send(batch_of(2))
    assert_indexed_once(hec, ["evt-0", "evt-1"])


async def test_a_wrong_or_disabled_token_holds(hec: HecEmulator, tmp_path: Path) -> None:
    """Real token checks: unknown -> code 4, disabled -> code 1; both hold."""
    async with running(hec.url, tmp_path, token="wrong-token-value") as sink:
        with pytest.raises(SinkUnavailableError, match="code 4"):
            await sink.send(batch_of(2))
    hec.token().enabled = False
    async with running(hec.url, tmp_path) as sink:
        with pytest.raises(SinkUnavailableError, match="code 1"):
            await sink.send(batch_of(2))
    assert hec.event_ids() == []


async def test_an_index_the_token_may_not_use_holds(hec: HecEmulator, tmp_path: Path) -> None:
    """Code 7 (incorrect index) is an operator fix: hold, not dead letters."""
    hec.token().indexes = {"main"}
    async with running(hec.url, tmp_path, index="bighub") as sink:
        with pytest.raises(SinkUnavailableError, match="index"):
            await sink.send(batch_of(3))
    assert hec.event_ids() == []


async def test_an_index_refused_mid_batch_keeps_what_hec_took(
    hec: HecEmulator, tmp_path: Path
) -> None:
    """Code 7 at event k: HEC kept events before k; those count, the rest are held."""
    hec.token().indexes = {"main"}
    batch = [make_event(0), make_event(1), make_event(2, "approval.created"), make_event(3)]
    async with running(
        hec.url, tmp_path, index="main", categories={"approval": {"index": "approvals"}}
    ) as sink:
        with pytest.raises(PartialDeliveryError) as caught:
            await sink.send(batch)
        assert set(caught.value.failures) == {2, 3}
        assert all(isinstance(e, SinkUnavailableError) for e in caught.value.failures.values())
        hec.token().indexes = None  # the operator allows the index
        await sink.send(batch[2:])
    assert_indexed_once(hec, ids(batch))


async def test_busy_in_the_middle_keeps_what_went_through(hec: HecEmulator, tmp_path: Path) -> None:
    """The first request lands, HEC turns busy: delivered ones count, the rest wait."""
    hec.inject.extend([None, 9])
    batch = batch_of(40, note="x" * 600)
    async with running(hec.url, tmp_path, max_request_bytes=16_384) as sink:
        with pytest.raises(PartialDeliveryError) as caught:
            await sink.send(batch)
        failed = sorted(caught.value.failures)
        assert all(type(e) is SinkUnavailableError for e in caught.value.failures.values())
        assert hec.event_ids() == [e for i, e in enumerate(ids(batch)) if i not in failed]
        await sink.send([batch[i] for i in failed])
    assert_indexed_once(hec, ids(batch))


async def test_connection_refused_holds(tmp_path: Path) -> None:
    """Nothing listening: SinkUnavailableError (events wait without being charged)."""
    async with running(f"http://127.0.0.1:{free_port()}", tmp_path) as sink:
        with pytest.raises(SinkUnavailableError, match="connect"):
            await sink.send(batch_of(1))


async def test_a_slow_answer_times_out_as_retryable(hec: HecEmulator, tmp_path: Path) -> None:
    """A read timeout may follow delivery: retry (a duplicate at worst), never a hold."""
    hec.answer_delay = 1.0
    async with running(hec.url, tmp_path, timeout_seconds=0.2) as sink:
        with pytest.raises(RetryableSinkError, match="ReadTimeout") as caught:
            await sink.send(batch_of(1))
    assert not isinstance(caught.value, SinkUnavailableError)


# -- TLS -------------------------------------------------------------------------------------


def _certificates(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1 signed by it."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


async def test_tls_is_verified_and_a_ca_bundle_is_honoured(tmp_path: Path) -> None:
    """An unknown CA holds with a hint; with ca_bundle the same events go through."""
    ca, cert, key = _certificates(tmp_path)
    emulator = HecEmulator().start(certfile=str(cert), keyfile=str(key))
    try:
        async with running(emulator.url, tmp_path) as sink:
            with pytest.raises(SinkUnavailableError, match="ca_bundle"):
                await sink.send(batch_of(2))
            health = await sink.health()
            assert not health.ok
            assert "ca_bundle" in health.detail
        async with running(emulator.url, tmp_path, ca_bundle=ca) as sink:
            await sink.send(batch_of(2))
            assert (await sink.health()).ok
        assert_indexed_once(emulator, ["evt-0", "evt-1"])
    finally:
        emulator.stop()


# -- health and secrets ------------------------------------------------------------------------


async def test_health_checks_hec_and_the_token(hec: HecEmulator, tmp_path: Path) -> None:
    """OK when healthy; busy, bad or disabled token each give a reason."""
    async with running(hec.url, tmp_path) as sink:
        assert (await sink.health()).ok
        hec.busy = True
        busy = await sink.health()
        assert not busy.ok
        assert "queues are full" in busy.detail
        hec.busy = False
        hec.token().enabled = False
        disabled = await sink.health()
        assert not disabled.ok
        assert "disabled" in disabled.detail
    async with running(hec.url, tmp_path, token="not-the-token") as sink:
        wrong = await sink.health()
        assert not wrong.ok
        assert "token" in wrong.detail
    assert hec.event_ids() == []


async def test_health_reports_an_ack_mismatch(
    hec: HecEmulator, hec_ack: HecEmulator, tmp_path: Path
) -> None:
    """ack=true on a token without ack, and ack=false on a token with it, are unhealthy."""
    async with running(hec.url, tmp_path, ack=True) as sink:
        health = await sink.health()
        assert not health.ok
        assert "set ack = false" in health.detail
    async with running(hec_ack.url, tmp_path / "other", ack=False) as sink:
        health = await sink.health()
        assert not health.ok
        assert "set ack = true" in health.detail
    async with running(hec_ack.url, tmp_path / "third", ack=True) as sink:
        assert (await sink.health()).ok


async def test_the_token_never_reaches_logs_or_errors(hec: HecEmulator, tmp_path: Path) -> None:
    """Holds, rejections, health details and reprs never show the token."""
    hec.poison_ids = {"evt-1": 6}
    details: list[str] = []
    with capture_logs() as logs:
        async with running(hec.url, tmp_path) as sink:
            with pytest.raises(PartialDeliveryError) as caught:
                await sink.send(batch_of(3))
            details.append(str(caught.value.failures))
            hec.token().enabled = False
            with pytest.raises(SinkUnavailableError) as held:
                await sink.send(batch_of(3, start=10))
            details += [str(held.value), (await sink.health()).detail, repr(sink.config)]
    assert logs, "expected the rejection and the hold to be logged"
    assert any(entry["event"] == "splunk_hec_refused" for entry in logs)
    text = repr(logs) + "".join(details)
    assert TOKEN not in text
