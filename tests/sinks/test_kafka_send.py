"""Kafka sink send path, health and connect, against a stand-in producer passed through
the sink's own ``producer_factory`` / ``admin_factory`` seams; the worker thread."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kafka.errors as ke
import pytest

from sinks import (
    PartialDeliveryError,
    PermanentSinkError,
    RetryableSinkError,
    SinkError,
    SinkUnavailableError,
)
from sinks.kafka import KafkaSink
from sinks.kafka._worker import Worker, WorkerTimeout
from tests.fakes.tls import TlsListener, make_tls_files, tls_listener
from tests.harness import free_port
from tests.sinks._kafka import (
    PASSWORD,
    FakePlan,
    config,
    fake_sink,
    make_event,
    plan,
    run,
)


def test_send_returns_once_every_future_succeeded(plan: FakePlan) -> None:
    """send() waits for every delivery acknowledgement before returning."""
    plan.ack_seconds = 0.2
    sink = fake_sink(plan)

    async def go() -> float:
        await sink.start()
        started = time.monotonic()
        await sink.send([make_event(i) for i in range(5)])
        elapsed = time.monotonic() - started
        await sink.close()
        return elapsed

    assert run(go()) >= 0.2
    assert [s[1] for s in plan.producers[0].sent] == [f"evt_{i}".encode() for i in range(5)]


def test_producer_runs_off_the_event_loop_one_call_at_a_time(plan: FakePlan) -> None:
    """A slow producer leaves the loop free; concurrent sends never overlap in the worker."""
    plan.send_seconds = 0.02
    sink = fake_sink(plan, name="slow")
    ticks = 0

    async def ticker(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    async def go() -> None:
        await sink.start()
        stop = asyncio.Event()
        task = asyncio.create_task(ticker(stop))
        await asyncio.gather(
            *(sink.send([make_event(10 * j + i) for i in range(10)]) for j in range(3))
        )
        stop.set()
        await task
        await sink.close()

    run(go())
    assert plan.max_active == 1
    assert plan.threads == {"kafka-slow"}
    assert ticks >= 20  # 30 sends x 20 ms = 0.6 s during which the loop kept running


def test_refused_record_is_dead_lettered_alone(plan: FakePlan) -> None:
    """A too-large record fails only its own position; the others are delivered."""
    plan.fail["evt_2"] = ke.MessageSizeTooLargeError("too large")
    plan.raise_on_send["evt_4"] = ke.MessageSizeTooLargeError("over max_request_size")
    sink = fake_sink(plan)

    async def go() -> PartialDeliveryError:
        await sink.start()
        with pytest.raises(PartialDeliveryError) as info:
            await sink.send([make_event(i) for i in range(1, 6)])
        await sink.send([make_event(9)])
        await sink.close()
        return info.value

    error = run(go())
    assert sorted(error.failures) == [1, 3]
    assert all(isinstance(e, PermanentSinkError) for e in error.failures.values())
    assert len(plan.producers) == 1  # a refused record does not cost the connection


def test_single_refused_record_is_permanent(plan: FakePlan) -> None:
    """A batch whose every record is refused raises PermanentSinkError."""
    plan.fail["evt_1"] = ke.MessageSizeTooLargeError("too large")
    sink = fake_sink(plan)
    with pytest.raises(PermanentSinkError, match="too large"):
        run(sink.send([make_event(1)]))


def test_unencodable_event_is_permanent(plan: FakePlan) -> None:
    """A body whose key cannot be read (not JSON) can never be encoded: dead letter."""
    sink = fake_sink(plan, key="actor")
    with pytest.raises(PermanentSinkError, match="cannot encode"):
        run(sink.send([make_event(1, body=b"\xff not json")]))


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ke.NotLeaderForPartitionError(), RetryableSinkError),
        (ke.KafkaTimeoutError("Expiring 1 record(s)"), SinkUnavailableError),
    ],
)
def test_transient_failure_fails_the_batch_and_renews_the_producer(
    plan: FakePlan, error: BaseException, expected: type[SinkError]
) -> None:
    """Any non-refusal fails the whole batch, and the next attempt gets a new producer."""
    plan.fail["evt_2"] = error
    sink = fake_sink(plan)

    async def go() -> None:
        with pytest.raises(expected) as info:
            await sink.send([make_event(i) for i in range(1, 4)])
        assert not isinstance(info.value, PartialDeliveryError)
        assert plan.producers[0].closed
        plan.fail.clear()
        await sink.send([make_event(i) for i in range(1, 4)])
        await sink.close()

    run(go())
    assert len(plan.producers) == 2
    assert len(plan.producers[1].sent) == 3


def test_unavailable_wins_over_retryable(plan: FakePlan) -> None:
    """When some records time out, the batch is reported unavailable (not charged)."""
    plan.fail["evt_1"] = ke.NotLeaderForPartitionError()
    plan.fail["evt_2"] = ke.KafkaTimeoutError("Expiring")
    with pytest.raises(SinkUnavailableError):
        run(fake_sink(plan).send([make_event(1), make_event(2)]))


def test_no_handover_after_the_producer_stops_taking_records(plan: FakePlan) -> None:
    """A metadata timeout in send() stops the batch at once instead of timing out per record."""
    plan.raise_on_send["evt_1"] = ke.KafkaTimeoutError("Failed to update metadata")
    sink = fake_sink(plan)
    with pytest.raises(SinkUnavailableError, match="metadata"):
        run(sink.send([make_event(i) for i in range(0, 50)]))
    assert len(plan.producers[0].sent) == 1  # evt_0 only; evt_2.. never handed over


def test_producer_settings(plan: FakePlan, monkeypatch: pytest.MonkeyPatch) -> None:
    """acks=all + idempotence by default; SASL credentials resolved; no idempotence -> 1 in flight."""
    monkeypatch.setenv("KAFKA_PASSWORD", PASSWORD)
    run(
        fake_sink(
            plan,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-256",
            sasl_username="bighub",
            sasl_password="env:KAFKA_PASSWORD",
            compression="gzip",
            linger_ms=20,
        ).start()
    )
    run(fake_sink(plan, acks=1, enable_idempotence=False).start())
    first, second = (p.settings for p in plan.producers)
    assert first["acks"] == -1
    assert first["enable_idempotence"] is True
    assert first["max_in_flight_requests_per_connection"] == 5
    assert first["compression_type"] == "gzip"
    assert first["linger_ms"] == 20
    assert first["sasl_mechanism"] == "SCRAM-SHA-256"
    assert first["sasl_plain_username"] == "bighub"
    assert first["sasl_plain_password"] == PASSWORD
    assert first["client_id"] == "bighub-siem.kafka"
    assert "ssl_context" not in first
    assert (second["acks"], second["enable_idempotence"]) == (1, False)
    assert second["max_in_flight_requests_per_connection"] == 1
    assert second["compression_type"] is None


def test_tls_files_that_do_not_load_fail_start_clearly(plan: FakePlan, tmp_path: Path) -> None:
    """A CA file that is not PEM fails start() with a message naming ssl_cafile."""
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate")
    sink = fake_sink(plan, security_protocol="SSL", ssl_cafile=str(ca))
    with pytest.raises(SinkUnavailableError, match="ssl_cafile"):
        run(sink.start())


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A TCP port that accepts connections and never speaks Kafka."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield int(server.getsockname()[1])
    server.close()


def test_start_says_why_it_cannot_connect(
    plan: FakePlan, silent_listener: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused port vs. a handshake that never completes: each gets its own message."""
    monkeypatch.setenv("KAFKA_PASSWORD", PASSWORD)
    plan.refuse_connect = ke.KafkaTimeoutError("Unable to bootstrap")
    closed = fake_sink(plan, bootstrap_servers=[f"127.0.0.1:{free_port()}"])
    with pytest.raises(SinkUnavailableError, match="no bootstrap server accepts connections"):
        run(closed.start())
    sasl = fake_sink(
        plan,
        bootstrap_servers=[f"127.0.0.1:{silent_listener}"],
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="bighub",
        sasl_password="env:KAFKA_PASSWORD",
    )
    with pytest.raises(SinkUnavailableError) as info:
        run(sasl.start())
    text = str(info.value)
    assert "accepts TCP connections but the Kafka handshake did not complete" in text
    assert "sasl_mechanism (SCRAM-SHA-512)" in text
    assert PASSWORD not in text


def test_close_is_idempotent_and_final(plan: FakePlan) -> None:
    """close() twice is safe; a send after close is refused as unavailable."""
    sink = fake_sink(plan)

    async def go() -> None:
        await sink.start()
        await sink.close()
        await sink.close()
        with pytest.raises(SinkUnavailableError, match="closed"):
            await sink.send([make_event(1)])

    run(go())
    assert plan.producers[0].closed


def test_health_checks_the_routable_topics(plan: FakePlan) -> None:
    """health() uses a fresh client and lists the topics it fetched metadata for."""
    health = run(fake_sink(plan, events=["decision_event.*"]).health())
    assert health.ok
    assert "bighub.decision" in health.detail
    plan.refuse_connect = ke.KafkaTimeoutError("Unable to bootstrap")
    down = run(fake_sink(plan, bootstrap_servers=[f"127.0.0.1:{free_port()}"]).health())
    assert not down.ok
    assert "no bootstrap server accepts connections" in down.detail


def test_secret_value_is_used_only_for_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sink's repr-able state never carries the password."""
    monkeypatch.setenv("KAFKA_PASSWORD", PASSWORD)
    cfg = config(
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username="u",
        sasl_password="env:KAFKA_PASSWORD",
    )
    assert PASSWORD not in repr(cfg) + str(cfg) + repr(KafkaSink(cfg).config)


# -- TLS settings, against a plain TLS listener --------------------------------------------


def tls_sink(
    plan: FakePlan, listener: TlsListener, host: str = "localhost", **extra: Any
) -> KafkaSink:
    settings: dict[str, Any] = {
        "bootstrap_servers": [f"{host}:{listener.port}"],
        "security_protocol": "SSL",
        "ssl_cafile": str(listener.files.ca),
        "request_timeout_ms": 1000,
        **extra,
    }
    return fake_sink(plan, **settings)


def test_tls_with_the_right_ca_and_host_name_connects(
    plan: FakePlan, tls_listener: TlsListener
) -> None:
    """ssl_cafile + hostname check: the handshake passes, then the client is built with it."""
    run(tls_sink(plan, tls_listener).start())
    # The client can finish its side before the listener thread counts the handshake.
    deadline = time.monotonic() + 5
    while tls_listener.handshakes < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert tls_listener.handshakes >= 1
    ctx = plan.producers[0].settings["ssl_context"]
    assert ctx.check_hostname is True
    assert ctx.minimum_version.name == "TLSv1_2"


def test_tls_hostname_mismatch_is_refused_unless_the_check_is_off(
    plan: FakePlan, tls_listener: TlsListener
) -> None:
    """The certificate names "localhost"; dialling 127.0.0.1 fails the hostname check."""
    with pytest.raises(SinkUnavailableError, match="certificate rejected"):
        run(tls_sink(plan, tls_listener, host="127.0.0.1").start())
    assert plan.producers == []
    run(tls_sink(plan, tls_listener, host="127.0.0.1", ssl_check_hostname=False).start())
    assert len(plan.producers) == 1


def test_tls_untrusted_ca_is_refused(plan: FakePlan, tls_listener: TlsListener) -> None:
    """Without our CA file, the system CAs do not trust the broker: a clear error."""
    settings = {
        "bootstrap_servers": [f"localhost:{tls_listener.port}"],
        "security_protocol": "SSL",
        "request_timeout_ms": 1000,
    }
    with pytest.raises(SinkUnavailableError, match="certificate rejected"):
        run(fake_sink(plan, **settings).start())


def test_tls_against_a_port_that_never_answers(plan: FakePlan, silent_listener: int) -> None:
    """A listener that never speaks TLS fails in request_timeout_ms, not never."""
    sink = fake_sink(
        plan,
        bootstrap_servers=[f"127.0.0.1:{silent_listener}"],
        security_protocol="SSL",
        request_timeout_ms=1000,
    )
    started = time.monotonic()
    with pytest.raises(SinkUnavailableError, match="no TLS answer within 1 s"):
        run(sink.start())
    assert time.monotonic() - started < 5


def test_client_certificate_is_loaded(plan: FakePlan, tmp_path: Path) -> None:
    """ssl_certfile / ssl_keyfile load into the context; a mismatched pair fails clearly."""
    one = make_tls_files(tmp_path / "one", ["localhost"])
    other = make_tls_files(tmp_path / "two", ["localhost"])
    sink = fake_sink(
        plan,
        bootstrap_servers=[f"127.0.0.1:{free_port()}"],
        security_protocol="SSL",
        ssl_cafile=str(one.ca),
        ssl_certfile=str(one.cert),
        ssl_keyfile=str(other.key),
    )
    with pytest.raises(SinkUnavailableError, match="ssl_certfile / ssl_keyfile: cannot load"):
        run(sink.start())


# -- the worker thread -----------------------------------------------------------------------


def test_worker_gives_up_on_a_stuck_call_without_queueing_behind_it() -> None:
    """A call past its limit -> WorkerTimeout; the next caller waits for it, then runs."""
    worker = Worker("w")
    release = threading.Event()
    calls: list[str] = []

    def stuck() -> str:
        release.wait(5)
        calls.append("stuck")
        return "late"

    async def go() -> None:
        with pytest.raises(WorkerTimeout):
            await worker.run(stuck, 0.1)
        with pytest.raises(WorkerTimeout):  # still stuck: nothing was queued behind it
            await worker.run(lambda: calls.append("second"), 0.1)
        release.set()
        assert await worker.run(lambda: "third", 5) == "third"
        with pytest.raises(ZeroDivisionError):
            await worker.run(lambda: 1 // 0, 5)
        worker.stop()

    run(go())
    assert calls == ["stuck"]
    assert worker._thread is None


def test_worker_thread_is_a_daemon() -> None:
    """A client call that never returns cannot hold the process open at exit."""
    worker = Worker("w")

    async def go() -> bool:
        return await worker.run(lambda: threading.current_thread().daemon, 5)

    assert run(go()) is True
    worker.stop()
