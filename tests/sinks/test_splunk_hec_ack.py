"""Indexer acknowledgement against the emulator: confirmation, timeouts, restarts.

A "restart" here is a new sink instance on the same state file after the first one
was cancelled mid-send (what a SIGKILL leaves behind); the end-to-end version with
a real receiver process is in test_splunk_hec_dispatch.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from sinks.base import (
    Event,
    PartialDeliveryError,
    PermanentSinkError,
    RetryableSinkError,
    SinkUnavailableError,
)
from tests.fakes.hec import HecEmulator, hec, hec_ack
from tests.sinks._hec import (
    anyio_backend,
    assert_indexed_once,
    batch_of,
    ids,
    running,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def _state(tmp_path: Path) -> dict[str, object]:
    path = tmp_path / "ack.json"
    if not path.exists():  # opened at the first send
        return {"records": []}
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


async def _wait(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


async def test_send_returns_only_after_the_ack(hec_ack: HecEmulator, tmp_path: Path) -> None:
    """Slow acks: send() waits for indexing; each event is indexed once, with its ackId."""
    hec_ack.ack_delay = 0.3
    batch = batch_of(20)
    async with running(hec_ack.url, tmp_path, ack=True, ack_poll_interval_seconds=0.05) as sink:
        started = time.monotonic()
        await sink.send(batch)
        assert time.monotonic() - started >= 0.3
    assert_indexed_once(hec_ack, ids(batch))
    assert {e.ack_id for e in hec_ack.snapshot()} == {0}
    state = _state(tmp_path)
    records = state["records"]
    assert isinstance(records, list)
    assert records[0]["confirmed_at"] is not None
    assert hec_ack.event_posts()[0].channel == state["channel"]


async def test_each_request_of_a_batch_is_acked(hec_ack: HecEmulator, tmp_path: Path) -> None:
    """A batch sent as several requests waits for every ackId."""
    batch = batch_of(30, note="x" * 600)
    async with running(
        hec_ack.url, tmp_path, ack=True, max_request_bytes=16_384, ack_poll_interval_seconds=0.05
    ) as sink:
        await sink.send(batch)
    assert len({e.ack_id for e in hec_ack.snapshot()}) == len(hec_ack.event_posts()) > 1
    assert_indexed_once(hec_ack, ids(batch))


async def test_a_lost_ack_is_resent_after_ack_timeout(hec_ack: HecEmulator, tmp_path: Path) -> None:
    """HEC lost the data (no ack ever): RetryableSinkError after ack_timeout, resend lands once."""
    hec_ack.lose_acks = 1
    batch = batch_of(10)
    async with running(
        hec_ack.url, tmp_path, ack=True, ack_timeout_seconds=0.4, ack_poll_interval_seconds=0.05
    ) as sink:
        with pytest.raises(RetryableSinkError, match="not confirmed within"):
            await sink.send(batch)
        assert hec_ack.event_ids() == []
        assert _state(tmp_path)["records"] == []  # forgotten: the resend gets a new ackId
        await sink.send(batch)
    assert_indexed_once(hec_ack, ids(batch))


async def test_an_ack_later_than_the_timeout_can_duplicate(
    hec_ack: HecEmulator, tmp_path: Path
) -> None:
    """The documented limit: data indexed after ack_timeout is sent again (at least once)."""
    hec_ack.acks_paused = True
    batch = batch_of(4)
    async with running(
        hec_ack.url, tmp_path, ack=True, ack_timeout_seconds=0.2, ack_poll_interval_seconds=0.05
    ) as sink:
        with pytest.raises(RetryableSinkError):
            await sink.send(batch)
        hec_ack.release_acks()  # HEC indexes the first request after the sink gave up
        await sink.send(batch)
    await _wait(lambda: len(hec_ack.event_ids()) == 8)
    assert sorted(set(hec_ack.event_ids())) == sorted(ids(batch))


async def test_poison_in_ack_mode_loses_nothing(hec_ack: HecEmulator, tmp_path: Path) -> None:
    """Only the bad event fails; those HEC took ahead of it are re-sent (no ackId covers them)."""
    hec_ack.poison_ids = {"evt-5": 6}
    batch = batch_of(10)
    async with running(hec_ack.url, tmp_path, ack=True, ack_poll_interval_seconds=0.05) as sink:
        with pytest.raises(PartialDeliveryError) as caught:
            await sink.send(batch)
    assert set(caught.value.failures) == {5}
    assert isinstance(caught.value.failures[5], PermanentSinkError)
    indexed = hec_ack.event_ids()
    assert set(indexed) == set(ids(batch)) - {"evt-5"}
    twice = {i for i in indexed if indexed.count(i) > 1}
    assert twice == {f"evt-{i}" for i in range(5)}  # the documented duplicates, no more


async def test_ack_off_on_the_token_holds_before_sending(hec: HecEmulator, tmp_path: Path) -> None:
    """ack = true but the token has no ack: hold (code 14) without posting any event."""
    async with running(hec.url, tmp_path, ack=True) as sink:
        with pytest.raises(SinkUnavailableError, match="code 14"):
            await sink.send(batch_of(3))
    assert hec.event_posts() == []


async def test_ack_turned_off_midway_holds_and_stops_resending(
    hec_ack: HecEmulator, tmp_path: Path
) -> None:
    """A 200 without ackId holds; later sends check /ack first instead of posting again."""
    async with running(hec_ack.url, tmp_path, ack=True, ack_poll_interval_seconds=0.05) as sink:
        await sink.send(batch_of(2))
        hec_ack.token().ack = False
        with pytest.raises(SinkUnavailableError, match="no ackId"):
            await sink.send(batch_of(2, start=2))
        posts = len(hec_ack.event_posts())
        for _ in range(3):
            with pytest.raises(SinkUnavailableError, match="code 14"):
                await sink.send(batch_of(2, start=2))
        assert len(hec_ack.event_posts()) == posts
        hec_ack.token().ack = True
        await sink.send(batch_of(2, start=2))
    # evt-2/3 went once without ack and once more after the fix: at least once, never lost.
    assert sorted(set(hec_ack.event_ids())) == ["evt-0", "evt-1", "evt-2", "evt-3"]


async def _crash_while_waiting(url: str, tmp_path: Path, batch: list[Event]) -> None:
    """Start a send that waits on paused acks, then cancel it: the process 'dies'."""
    async with running(url, tmp_path, ack=True, ack_poll_interval_seconds=0.05) as sink:
        task = asyncio.create_task(sink.send(batch))
        await _wait(lambda: bool(_state(tmp_path)["records"]))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_pending_acks_survive_a_restart_without_resending(
    hec_ack: HecEmulator, tmp_path: Path
) -> None:
    """After a restart the sink polls the saved ackId first: confirmed -> no second post."""
    hec_ack.acks_paused = True
    batch = batch_of(15)
    await _crash_while_waiting(hec_ack.url, tmp_path, batch)
    assert len(hec_ack.event_posts()) == 1
    hec_ack.release_acks()
    async with running(hec_ack.url, tmp_path, ack=True) as sink:
        await sink.send(batch)
    assert len(hec_ack.event_posts()) == 1
    assert_indexed_once(hec_ack, ids(batch))


async def test_a_confirmed_ack_survives_a_crash_before_marking(
    hec_ack: HecEmulator, tmp_path: Path
) -> None:
    """Confirmed, then the receiver died before marking rows: the rerun does not resend."""
    batch = batch_of(5)
    async with running(hec_ack.url, tmp_path, ack=True) as sink:
        await sink.send(batch)
    async with running(hec_ack.url, tmp_path, ack=True) as sink:
        await sink.send(batch)  # the dispatcher hands the unmarked rows over again
        assert len(hec_ack.event_posts()) == 1
        await sink.send(batch_of(3, start=100))
    # The file keeps only what the latest batch needs: it stays one batch small.
    records = _state(tmp_path)["records"]
    assert isinstance(records, list)
    assert [r["events"] for r in records] == [["100:evt-100", "101:evt-101", "102:evt-102"]]
    assert_indexed_once(hec_ack, [*ids(batch), "evt-100", "evt-101", "evt-102"])


async def test_data_hec_lost_in_a_restart_is_resent_once(
    hec_ack: HecEmulator, tmp_path: Path
) -> None:
    """HEC restarted and forgot the channel: the saved ackId expires, the events go again."""
    hec_ack.acks_paused = True
    batch = batch_of(6)
    await _crash_while_waiting(hec_ack.url, tmp_path, batch)
    hec_ack.restart()
    hec_ack.acks_paused = False
    # The receiver comes back ten minutes later: the saved ackId is past its timeout.
    async with running(hec_ack.url, tmp_path, ack=True, clock=lambda: time.time() + 600) as sink:
        with pytest.raises(RetryableSinkError, match="not confirmed"):
            await sink.send(batch)
        await sink.send(batch)
    assert_indexed_once(hec_ack, ids(batch))


async def test_an_ack_id_reset_voids_older_ack_ids(hec_ack: HecEmulator, tmp_path: Path) -> None:
    """HEC restarted: a new request gets ackId 0 again, so the old pending ackId 0 is void."""
    hec_ack.acks_paused = True
    first = batch_of(4)
    await _crash_while_waiting(hec_ack.url, tmp_path, first)
    hec_ack.restart()
    hec_ack.acks_paused = False
    async with running(hec_ack.url, tmp_path, ack=True) as sink:
        # A batch with both the old events (waiting on the void ackId) and new ones.
        with pytest.raises(PartialDeliveryError) as caught:
            await sink.send([*first, *batch_of(2, start=50)])
        assert set(caught.value.failures) == {0, 1, 2, 3}
        await sink.send(first)
    assert_indexed_once(hec_ack, [*ids(first), "evt-50", "evt-51"])


async def test_health_asks_about_a_pending_ack_id_and_records_the_answer(
    hec_ack: HecEmulator, tmp_path: Path
) -> None:
    """A send gave up waiting (ackId 0 pending); health() asks HEC about ackId 0 itself,
    records the confirmation, so the next send of those events posts nothing."""
    hec_ack.acks_paused = True
    batch = batch_of(5)
    async with running(hec_ack.url, tmp_path, ack=True, ack_poll_interval_seconds=0.05) as sink:
        task = asyncio.create_task(sink.send(batch))
        await _wait(lambda: bool(_state(tmp_path)["records"]))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        hec_ack.release_acks()
        assert (await sink.health()).ok
        [record] = _state(tmp_path)["records"]  # type: ignore[misc]
        assert record["confirmed_at"] is not None
        await sink.send(batch)
    assert len([r for r in hec_ack.event_posts() if r.events]) == 1  # health's post is empty
    assert_indexed_once(hec_ack, ids(batch))
    asked = [r.acks_asked for r in hec_ack.requests if r.path.endswith("/ack")]
    assert (0,) in asked


async def test_the_sink_never_sends_an_empty_ack_query(
    hec_ack: HecEmulator, tmp_path: Path
) -> None:
    """Start, health, sends and a restart: every ack query names ackIds (an empty list
    is undocumented; the emulator refuses it with code 6)."""
    async with running(hec_ack.url, tmp_path, ack=True, ack_poll_interval_seconds=0.05) as sink:
        assert (await sink.health()).ok
        await sink.send(batch_of(3))
        assert (await sink.health()).ok
    async with running(hec_ack.url, tmp_path, ack=True, ack_poll_interval_seconds=0.05) as sink:
        assert (await sink.health()).ok
        await sink.send(batch_of(3, start=10))
    queries = [r for r in hec_ack.requests if r.path.endswith("/ack")]
    assert queries
    assert all(r.status == 200 and r.acks_asked for r in queries)
