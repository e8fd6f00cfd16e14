"""The Sentinel sink against the Logs Ingestion + Entra ID emulators, with the real
``azure-monitor-ingestion`` and ``azure-identity`` clients over HTTPS: batching and gzip,
the DCR/stream path, and each error answer of the API.
"""

from __future__ import annotations

import gzip
import json

import pytest

from sinks.base import (
    PartialDeliveryError,
    PermanentSinkError,
    RetryableSinkError,
    SinkUnavailableError,
)
from tests.fakes.azure import DCR_ID, Azure, azure
from tests.fakes.hec import make_event
from tests.harness import free_port
from tests.sinks.sentinel_support import (
    Clock,
    assert_ingested_once,
    decisions,
    ids,
    rule_changes,
    run,
    running,
)

pytestmark = pytest.mark.integration


def test_batch_goes_as_gzip_arrays_to_each_stream(azure: Azure) -> None:
    """Decisions and rule changes each reach their DCR stream, gzip, once, as declared."""
    events = decisions(300) + rule_changes(40, start=300)

    async def go() -> None:
        async with running(azure) as sink:
            await sink.send(events)

    run(go)
    assert_ingested_once(azure, ids(events))
    calls = azure.dce.ok_calls()
    assert {c.dcr for c in calls} == {DCR_ID}
    assert {c.stream for c in calls} == {"Custom-BighubDecisions", "Custom-BighubRuleChanges"}
    assert all(c.gzip and c.body_bytes < c.raw_bytes for c in calls)
    assert len(azure.dce.stream_rows("Custom-BighubRuleChanges")) == 40
    assert azure.dce.dropped_columns == {}, "the sink sends only declared columns"


def test_large_batch_is_split_under_the_call_limit(azure: Azure) -> None:
    """3 MB of rows go as several calls, each at most max_call_bytes uncompressed."""
    events = decisions(600, note="n" * 5000)

    async def go() -> None:
        async with running(azure) as sink:
            await sink.send(events)

    run(go)
    assert_ingested_once(azure, ids(events))
    calls = azure.dce.ok_calls()
    assert len(calls) >= 3
    assert max(c.raw_bytes for c in calls) <= 1_000_000


def test_413_splits_the_call_until_it_fits(azure: Azure) -> None:
    """The service's limit is lower than planned: 413, halves, every row in once."""
    azure.dce.max_call_bytes = 40_000
    events = decisions(200, note="n" * 400)

    async def go() -> None:
        async with running(azure) as sink:
            await sink.send(events)

    run(go)
    assert_ingested_once(azure, ids(events))
    statuses = [c.status for c in azure.dce.calls]
    assert 413 in statuses
    assert statuses[-1] == 204


def test_row_alone_over_the_limit_is_the_only_dead_letter(azure: Azure) -> None:
    """A row that no call can hold fails alone, permanently; the rest is delivered."""
    events = decisions(5)
    events[2] = make_event(2, note="n" * 3000)

    async def go() -> None:
        async with running(azure, max_call_bytes=2048) as sink:
            with pytest.raises(PartialDeliveryError) as info:
                await sink.send(events)
            assert set(info.value.failures) == {2}
            assert isinstance(info.value.failures[2], PermanentSinkError)
            assert "max_call_bytes" in str(info.value.failures[2])

    run(go)
    assert_ingested_once(azure, [e.event_id for i, e in enumerate(events) if i != 2])


def test_one_refused_record_is_isolated_by_bisection(azure: Azure) -> None:
    """400 on a batch: bisect, dead-letter only the refused record, deliver the rest once."""
    azure.dce.refuse = lambda row: row.get("EventId") == "evt-37"
    events = decisions(100)

    async def go() -> None:
        async with running(azure) as sink:
            with pytest.raises(PartialDeliveryError) as info:
                await sink.send(events)
            assert set(info.value.failures) == {37}
            failure = info.value.failures[37]
            assert isinstance(failure, PermanentSinkError)
            assert "InvalidPayload" in str(failure)

    run(go)
    assert_ingested_once(azure, [e.event_id for e in events if e.event_id != "evt-37"])
    assert len(azure.dce.calls) <= 2 * 7 + 2, "bisection, not one call per record"


def test_a_stream_refusing_everything_is_held_not_dead_lettered(azure: Azure) -> None:
    """400 even for an empty call: the stream is wrong, so nothing is blamed on events."""
    azure.dce.fail_next(400, "InvalidStream", times=50)

    async def go() -> None:
        async with running(azure) as sink:
            with pytest.raises(SinkUnavailableError, match="refuses even an empty call"):
                await sink.send(decisions(4))

    run(go)
    assert azure.dce.event_ids() == []


def test_records_refused_each_on_their_own_are_each_dead_lettered(azure: Azure) -> None:
    """Every record refused while the stream takes calls: each is its own dead letter."""
    azure.dce.refuse = lambda row: True
    events = decisions(3)

    async def go() -> None:
        async with running(azure) as sink:
            with pytest.raises(PartialDeliveryError) as info:
                await sink.send(events)
            assert set(info.value.failures) == {0, 1, 2}
            assert all(isinstance(e, PermanentSinkError) for e in info.value.failures.values())

    run(go)


@pytest.mark.parametrize(("status", "retry_after"), [(429, "7"), (503, "3")])
def test_throttled_holds_for_retry_after_uncharged(
    azure: Azure, status: int, retry_after: str
) -> None:
    """429 / 503: SinkUnavailableError with the wait; sends before it do not hit the service."""
    azure.dce.fail_next(status, retry_after=retry_after)
    clock = Clock()
    events = decisions(10)

    async def go() -> None:
        async with running(azure, clock) as sink:
            with pytest.raises(SinkUnavailableError) as info:
                await sink.send(events)
            assert info.value.retry_after == float(retry_after)
            calls = len(azure.dce.calls)
            clock.now += float(retry_after) - 1
            with pytest.raises(SinkUnavailableError, match="holding") as held:
                await sink.send(events)
            assert held.value.retry_after == pytest.approx(1.0)
            assert len(azure.dce.calls) == calls, "no call while holding"
            clock.now += 1.5
            await sink.send(events)

    run(go)
    assert_ingested_once(azure, ids(events))


def test_throttled_mid_batch_charges_only_what_was_not_taken(azure: Azure) -> None:
    """A 429 on the second call: the first call's rows are delivered, the rest wait uncharged."""
    azure.dce.fail_next(429, after=1, retry_after="1")
    events = decisions(40, note="n" * 400)

    async def go() -> None:
        async with running(azure, max_call_bytes=10_000) as sink:
            with pytest.raises(PartialDeliveryError) as info:
                await sink.send(events)
            failed = info.value.failures
            assert failed
            assert all(isinstance(e, SinkUnavailableError) for e in failed.values())
            delivered = [e.event_id for i, e in enumerate(events) if i not in failed]
            assert_ingested_once(azure, delivered)
            assert delivered, "the first call went through"

    run(go)


def test_unknown_dcr_is_held_and_named(azure: Azure) -> None:
    """404 (no such DCR): unavailable, naming what to check; nothing charged."""
    other = "dcr-" + "f" * 32

    async def go() -> None:
        async with running(azure, dcr_immutable_id=other) as sink:
            with pytest.raises(SinkUnavailableError, match=other):
                await sink.send(decisions(2))
            health = await sink.health()
            assert not health.ok
            assert "not found" in health.detail

    run(go)


def test_unreachable_endpoint_is_unavailable(azure: Azure) -> None:
    """Nothing listens: unavailable, nothing sent, health says unreachable."""

    async def go() -> None:
        async with running(azure, endpoint=f"https://127.0.0.1:{free_port()}") as sink:
            with pytest.raises(SinkUnavailableError, match="unreachable"):
                await sink.send(decisions(2))
            health = await sink.health()
            assert not health.ok
            assert "unreachable" in health.detail

    run(go)


def test_no_answer_after_ingest_is_retryable_and_repeats_are_visible(azure: Azure) -> None:
    """The service took the rows but the answer never came: retryable; a re-send repeats them
    with the same EventId, which the documented KQL deduplicates."""
    azure.dce.stall_after_ingest_seconds = 3.0
    events = decisions(3)

    async def go() -> None:
        async with running(azure, read_timeout_seconds=0.5) as sink:
            with pytest.raises(RetryableSinkError, match="may have been ingested") as info:
                await sink.send(events)
            assert not isinstance(info.value, SinkUnavailableError)
            azure.dce.stall_after_ingest_seconds = 0
            await sink.send(events)

    run(go)
    assert sorted(azure.dce.event_ids()) == sorted(ids(events) * 2)


def test_empty_call_body_is_a_gzip_empty_array(azure: Azure) -> None:
    """health() posts ``[]`` per stream: the service checks auth, role, DCR and stream."""

    async def go() -> None:
        async with running(azure) as sink:
            health = await sink.health()
            assert health.ok, health.detail

    run(go)
    probes = [c for c in azure.dce.calls if c.rows == 0]
    assert {c.stream for c in probes} == {"Custom-BighubDecisions", "Custom-BighubRuleChanges"}
    assert all(c.status == 204 and c.raw_bytes == 2 for c in probes)
    assert json.loads(gzip.decompress(gzip.compress(b"[]"))) == []
