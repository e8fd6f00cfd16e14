"""Read-ahead: under a backlog the next batch is read while one is in flight, and it is
used only when the cursor ends exactly where that read began (receiver.readahead)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from receiver.dispatcher import Dispatcher
from receiver.errors import StoreError
from receiver.metrics import Metrics
from receiver.pacing import DrainPacer
from receiver.readahead import EVENT_BYTES, MAX_BYTES
from receiver.store import LogBatch, SQLiteStore
from sinks import Event, PartialDeliveryError, RetryableSinkError, SinkError
from tests.receiver.test_dispatcher import MemorySink, config, new_event, run_until

IDS = [f"e{i:04d}" for i in range(50)]


class SlowSink(MemorySink):
    """Each send takes a while; notes how many store reads had begun when each ended."""

    def __init__(self, fail: dict[int, SinkError] | None = None) -> None:
        super().__init__(lambda n, b: (fail or {}).get(n))
        self.reads = 0
        self.reads_at_end: list[int] = []

    async def send(self, batch: Sequence[Event]) -> None:
        await asyncio.sleep(0.03)
        self.reads_at_end.append(self.reads)
        await super().send(batch)


async def drain(
    tmp: Path,
    sink: SlowSink,
    *,
    read_ahead: bool = True,
    failing_read: int = 0,
    max_bytes: int = 1 << 20,
    pacer: DrainPacer | None = None,
) -> None:
    store = SQLiteStore(tmp / "spool.db")
    await store.open()
    for i in range(len(IDS)):
        await store.ingest(new_event(i))
    real_read = store.read
    calls = 0

    async def read(*args: Any, **kwargs: Any) -> LogBatch:
        nonlocal calls
        calls += 1
        sink.reads += 1
        if calls == failing_read:
            raise StoreError("disk I/O error")
        return await real_read(*args, **kwargs)

    store.read = read  # type: ignore[method-assign]
    d = Dispatcher(
        sink,
        config(batch_max_events=10, batch_max_bytes=max_bytes),
        store,
        Metrics(),
        poll_seconds=0.02,
        read_ahead=read_ahead,
        pacer=pacer,
    )
    d.start()
    try:
        await run_until(lambda: sorted(set(sink.delivered)) == IDS)
        for _ in range(200):  # the last outcome is recorded just after the send returns
            if (await store.stats()).sinks["mem"].pending == 0:
                break
            await asyncio.sleep(0.01)
        assert (await store.stats()).sinks["mem"].pending == 0
        assert d.up, d.detail  # a failed read-ahead is not an error anyone sees
    finally:
        await d.stop()
        await store.close()


def test_next_batch_is_read_while_one_is_in_flight(tmp_path: Path) -> None:
    sink = SlowSink()
    asyncio.run(drain(tmp_path, sink))
    assert sink.delivered == IDS  # in order, each once
    assert [b[0] for b in sink.batches] == IDS[::10]
    # While send k was in flight, the read of batch k + 1 had already begun ...
    assert sink.reads_at_end[:4] == [2, 3, 4, 5], sink.reads_at_end

    off = SlowSink()
    (tmp_path / "off").mkdir()
    asyncio.run(drain(tmp_path / "off", off, read_ahead=False))
    assert off.delivered == IDS
    assert off.reads_at_end == [1, 2, 3, 4, 5]  # ... which without read-ahead waits


def test_sinks_with_large_batches_do_not_read_ahead(tmp_path: Path) -> None:
    """Two 64 MiB archive batches at once would be too much memory for one sink."""
    sink = SlowSink()
    asyncio.run(drain(tmp_path, sink, max_bytes=MAX_BYTES - 10 * EVENT_BYTES + 1))
    assert sink.delivered == IDS
    assert sink.reads_at_end == [1, 2, 3, 4, 5]


def test_no_read_ahead_while_webhooks_are_paced_first(tmp_path: Path) -> None:
    """The pacer counts a batch's time from its read: a read done ahead, beside the
    send, would be export work outside the share webhooks leave it."""
    pacer = DrainPacer(0.99)

    async def busy() -> None:
        while True:
            pacer.ingested()
            await asyncio.sleep(0.005)

    async def go(sink: SlowSink) -> None:
        webhooks = asyncio.ensure_future(busy())
        try:
            await drain(tmp_path, sink, pacer=pacer)
        finally:
            webhooks.cancel()

    sink = SlowSink()
    asyncio.run(go(sink))
    assert sink.delivered == IDS
    assert sink.reads_at_end == [1, 2, 3, 4, 5]


def test_a_retry_throws_the_read_ahead_away(tmp_path: Path) -> None:
    sink = SlowSink(fail={2: RetryableSinkError("busy")})
    asyncio.run(drain(tmp_path, sink))
    starts = [b[0] for b in sink.batches]
    assert starts == ["e0000", "e0010", "e0010", "e0020", "e0030", "e0040"]
    assert sink.delivered == IDS


def test_a_partial_failure_resends_from_the_failed_event_first(tmp_path: Path) -> None:
    sink = SlowSink(fail={1: PartialDeliveryError({5: RetryableSinkError("one refused")})})
    asyncio.run(drain(tmp_path, sink))
    assert sink.batches[1][0] == "e0005"  # not e0010, which was read ahead
    assert sorted(set(sink.delivered)) == IDS
    # e0006-e0009 were delivered in the first call and go again with e0005 (at least
    # once per sink call, as documented); nothing after e0009 overtook e0005.
    first_after = sink.delivered.index("e0010")
    assert sink.delivered.index("e0005", 5) < first_after


def test_a_failed_read_ahead_is_read_again(tmp_path: Path) -> None:
    sink = SlowSink()
    asyncio.run(drain(tmp_path, sink, failing_read=2))  # read 2 is the first read-ahead
    assert sink.delivered == IDS


def test_under_steady_traffic_no_batch_is_read_twice(tmp_path: Path) -> None:
    """Events keep arriving while batches are sent and batches wait to fill: a read ahead
    that finds a batch still filling loads no bodies and is waited on, not thrown away,
    so every batch loaded is a batch sent."""

    async def go() -> tuple[SlowSink, int]:
        store = SQLiteStore(tmp_path / "spool.db")
        await store.open()
        for i in range(25):
            await store.ingest(new_event(i))
        real_read = store.read
        loaded = 0

        async def read(*args: Any, **kwargs: Any) -> LogBatch:
            nonlocal loaded
            batch = await real_read(*args, **kwargs)
            loaded += bool(batch.events)
            return batch

        store.read = read  # type: ignore[method-assign]
        sink = SlowSink()
        cfg = config(batch_max_events=10, batch_max_wait_seconds=0.05)
        d = Dispatcher(sink, cfg, store, Metrics(), poll_seconds=0.02)
        d.start()
        try:
            for i in range(25, 50):
                await store.ingest(new_event(i))
                d.notify()
                await asyncio.sleep(0.005)
            await run_until(lambda: len(sink.delivered) == len(IDS))
        finally:
            await d.stop()
            await store.close()
        return sink, loaded

    sink, loaded = asyncio.run(go())
    assert sink.delivered == IDS
    assert loaded == sink.calls, (loaded, sink.calls)
