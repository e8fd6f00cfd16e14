"""The dispatcher under store failures, mixed outcomes, lost notifies and shutdown:
order per sink holds, nothing is written for an abandoned send, nothing is lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver.dispatcher import Dispatcher
from receiver.errors import StoreError
from receiver.metrics import Metrics
from receiver.store import Lease, LogBatch, Progress, Route, SQLiteStore
from sinks import (
    Event,
    PartialDeliveryError,
    PermanentSinkError,
    RetryableSinkError,
    SinkError,
    SinkUnavailableError,
)
from tests.receiver.test_dispatcher import MemorySink, config, new_event, run_until


class FlakyStore:
    """A real store whose chosen calls fail or stall (a seam we own: the Store protocol)."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.fail_advance = 0  # how many advance calls fail with "database is locked"
        self.read_delay = 0.0
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def advance(self, lease: Lease, progress: Progress) -> Lease:
        if self.fail_advance:
            self.fail_advance -= 1
            raise StoreError("sqlite: database is locked")
        return await self.store.advance(lease, progress)

    async def read(self, lease: Lease, route: Route, **kw: Any) -> LogBatch:
        self.reads += 1
        batch = await self.store.read(lease, route, **kw)
        if self.read_delay:
            await asyncio.sleep(self.read_delay)
        return batch


def assert_no_overtaking(batches: Sequence[Sequence[str]]) -> None:
    """Per-sink order as a check over the sends: each batch is in log order, and no send
    skips an older event that is sent again later (it would then arrive after a newer
    one). A sink that takes part of a batch and refuses the rest reorders within that
    one batch by its own doing; the dispatcher never adds to it."""
    for k, batch in enumerate(batches):
        assert list(batch) == sorted(batch), f"send {k} is not in log order: {batch}"
        newest = max(batch)
        for later in batches[k + 1 :]:
            skipped = [x for x in later if x < newest and x not in batch]
            assert not skipped, f"send {k} {list(batch)} went out before older {skipped}"


async def running(
    tmp: Path,
    sink: MemorySink,
    cfg: Any,
    events: int,
    body: Callable[[Dispatcher, FlakyStore], Any],
    *,
    poll: float = 0.02,
) -> None:
    real = SQLiteStore(tmp / "spool.db")
    await real.open()
    store = FlakyStore(real)
    for i in range(events):
        await real.ingest(new_event(i))
    d = Dispatcher(sink, cfg, store, Metrics(), poll_seconds=poll)  # type: ignore[arg-type]
    d.start()
    try:
        await body(d, store)
    finally:
        await d.stop(grace_seconds=2)
        await real.close()


def test_order_holds_when_an_outcome_cannot_be_recorded(tmp_path: Path) -> None:
    """The store refuses to record a failure once ("database is locked", as while a
    purge holds it): the batch is read again from the cursor and no newer event goes
    out first (0.1.0 delivered e0003 before e0000 here)."""
    sink = MemorySink(lambda n, b: RetryableSinkError("busy") if n == 1 else None)

    async def body(d: Dispatcher, store: FlakyStore) -> None:
        store.fail_advance = 1
        await run_until(lambda: sink.calls >= 1)
        for i in range(3, 8):
            await store.store.ingest(new_event(i))
            d.notify()
        await run_until(lambda: len(set(sink.delivered)) == 8)

    asyncio.run(running(tmp_path, sink, config(batch_max_events=3), 3, body))
    assert_no_overtaking(sink.batches)


def test_mixed_partial_failure_keeps_order(tmp_path: Path) -> None:
    """Unavailable and retryable failures in one batch: nothing newer overtakes the head
    while it waits out the longer backoff (0.1.0 delivered e0004 before e0000)."""

    def script(n: int, batch: Sequence[Event]) -> SinkError | None:
        if n == 1:
            return PartialDeliveryError(
                {0: SinkUnavailableError("indexer busy"), 2: RetryableSinkError("timeout")}
            )
        return None

    sink = MemorySink(script)

    async def body(d: Dispatcher, store: FlakyStore) -> None:
        await run_until(lambda: sink.calls >= 1)
        for i in range(4, 9):
            await store.store.ingest(new_event(i))
            d.notify()
        await run_until(lambda: len(set(sink.delivered)) == 9)

    asyncio.run(
        running(tmp_path, sink, config(batch_max_events=4, retry_initial_seconds=0.05), 4, body)
    )
    assert_no_overtaking(sink.batches)
    assert sink.batches[1][0] == "e0000"
    assert "e0001" not in sink.batches[1]  # the sink took it: not sent twice


outcome = st.sampled_from(["ok", "retry", "down", "permanent", "partial"])


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(script=st.lists(st.tuples(outcome, st.integers(0, 5)), max_size=12), n=st.integers(1, 12))
def test_random_outcomes_keep_per_sink_order(
    tmp_path_factory: Any, script: list[tuple[str, int]], n: int
) -> None:
    """Over random outcome sequences (including failed outcome writes) against the real
    dispatcher and store, no send overtakes an older event; every event ends delivered
    or dead."""
    tmp = tmp_path_factory.mktemp("random")
    plan = list(script)

    def decide(call: int, batch: Sequence[Event]) -> SinkError | None:
        if call > len(plan):
            return None
        kind, at = plan[call - 1]
        at %= len(batch)
        return {
            "ok": None,
            "retry": RetryableSinkError("r"),
            "down": SinkUnavailableError("d"),
            "permanent": PermanentSinkError("p"),
            "partial": PartialDeliveryError({at: RetryableSinkError("one")}),
        }[kind]

    sink = MemorySink(decide)

    async def body(d: Dispatcher, store: FlakyStore) -> None:
        store.fail_advance = sum(1 for kind, at in plan if at == 5)
        await run_until(
            lambda: (
                len(set(sink.delivered)) + d.metrics.dead_lettered.labels("mem")._value.get() >= n
            ),
            timeout=20,
        )

    cfg = config(
        batch_max_events=4, max_attempts=2, retry_initial_seconds=0.001, retry_max_seconds=0.005
    )
    asyncio.run(running(tmp, sink, cfg, n, body, poll=0.005))
    assert_no_overtaking(sink.batches)


def test_notify_while_reading_is_not_lost(tmp_path: Path) -> None:
    """An event stored while the dispatcher reads wakes it at once, not a poll later."""
    sink = MemorySink()

    async def body(d: Dispatcher, store: FlakyStore) -> None:
        await run_until(lambda: store.reads >= 1)
        store.read_delay = 0.3
        reads = store.reads
        await run_until(lambda: store.reads > reads)  # a read is in progress now
        await store.store.ingest(new_event(1))
        d.notify()
        started = time.monotonic()
        await run_until(lambda: len(sink.delivered) == 1, timeout=4)
        assert time.monotonic() - started < 1.5  # the poll interval is 5 s

    asyncio.run(running(tmp_path, sink, config(), 0, body, poll=5.0))


def test_stop_abandons_a_hanging_send_and_writes_nothing(tmp_path: Path) -> None:
    """A send that never returns is abandoned at the grace period: the cursor stays,
    and a restarted dispatcher delivers every event."""

    class Hanging(MemorySink):
        async def send(self, batch: Sequence[Event]) -> None:
            self.calls += 1
            await asyncio.Event().wait()

        async def close(self) -> None:
            await asyncio.Event().wait()  # a close stuck behind the send, as S3's was

    async def run() -> None:
        store = SQLiteStore(tmp_path / "spool.db")
        await store.open()
        for i in range(5):
            await store.ingest(new_event(i))
        sink = Hanging()
        d = Dispatcher(sink, config(), store, Metrics(), poll_seconds=0.02)  # type: ignore[arg-type]
        d.start()
        await run_until(lambda: sink.calls == 1)
        started = time.monotonic()
        await d.stop(grace_seconds=0.5)
        assert time.monotonic() - started < 2.0
        assert (await store.stats()).sinks["mem"].pending == 5
        await store.close()
        # The restart: the process owning the spool clears leases left behind.
        store = SQLiteStore(tmp_path / "spool.db", exclusive=True)
        await store.open()
        good = MemorySink()
        d2 = Dispatcher(good, config(), store, Metrics(), poll_seconds=0.02)  # type: ignore[arg-type]
        d2.start()
        await run_until(lambda: len(good.delivered) == 5)
        await d2.stop()
        await store.close()

    asyncio.run(run())


def test_dead_letter_budget_full_holds_the_sink(tmp_path: Path) -> None:
    """A dead letter that does not fit its budget holds the sink (reported down) instead
    of being dropped; once dead letters are purged, the sink goes on."""
    sink = MemorySink(
        lambda n, b: PermanentSinkError("refused") if b[0].event_id == "e0001" else None
    )

    async def run() -> None:
        store = SQLiteStore(tmp_path / "spool.db", max_dead_letter_bytes=1024)
        await store.open()
        await store.ingest(new_event(0))
        await store.ingest(replace(new_event(1), body=b"{" + b" " * 2000 + b"}"))
        await store.ingest(new_event(5))
        d = Dispatcher(sink, config(batch_max_events=1), store, Metrics(), poll_seconds=0.02)  # type: ignore[arg-type]
        d.start()
        try:
            await run_until(lambda: d.up is False and "max_dead_letter_bytes" in d.detail)
            assert "e0005" not in sink.delivered  # held behind the event that cannot go
            assert await store.dead_letters() == []
            store.max_dead_letter_bytes = 10**6
            await run_until(lambda: "e0005" in sink.delivered, timeout=60)
            assert [x.event_id for x in await store.dead_letters()] == ["e0001"]
        finally:
            await d.stop()
            await store.close()

    asyncio.run(run())


def test_narrow_routes_scan_the_log_at_full_speed(tmp_path: Path) -> None:
    """A sink that takes few event types does not crawl through the others at one read
    window per poll (it stalled body release and could fill the spool quota)."""
    sink = MemorySink()

    async def run() -> float:
        store = SQLiteStore(tmp_path / "spool.db")
        await store.open()
        for start in range(0, 20_000, 2000):
            await asyncio.gather(
                *(
                    store.ingest(replace(new_event(i), event_type="decision_event.created"))
                    for i in range(start, start + 2000)
                )
            )
        await store.ingest(replace(new_event(99_999), event_type="approval.created"))
        cfg = config(events=["approval.*"])
        d = Dispatcher(sink, cfg, store, Metrics(), poll_seconds=1.0)  # type: ignore[arg-type]
        started = time.monotonic()
        d.start()
        try:
            await run_until(lambda: sink.delivered == ["e99999"], timeout=15)
            return time.monotonic() - started
        finally:
            await d.stop()
            await store.close()

    took = asyncio.run(run())
    assert took < 3.0, f"{took:.1f} s to reach the one approval behind 20,000 decisions"


def test_a_retired_sink_is_not_exported_nor_revived(tmp_path: Path) -> None:
    """A dispatcher whose cursor was retired meanwhile (serve passes create_cursor=False)
    reports it and exports nothing; it does not bring the cursor back."""

    async def run() -> None:
        store = SQLiteStore(tmp_path / "spool.db")
        await store.open()
        await store.ensure_cursors([Route("mem", ("*",))])
        await store.ingest(new_event(1))
        await store.retire_sink("mem", "retired", now=time.time())
        sink = MemorySink()
        d = Dispatcher(sink, config(), store, Metrics(), poll_seconds=0.02, create_cursor=False)  # type: ignore[arg-type]
        d.start()
        try:
            await run_until(lambda: "retired" in d.detail)
            assert d.up is False
            assert sink.calls == 0
            assert await store.cursor_sinks() == []
        finally:
            await d.stop()
            await store.close()

    asyncio.run(run())


def test_dead_letter_budget_hold_sends_only_the_head(tmp_path: Path) -> None:
    """While a dead letter does not fit, the sink sends its head alone: nothing newer is
    delivered past it, and its done set does not grow."""
    sink = MemorySink(lambda n, b: PermanentSinkError("no") if b[0].event_id == "e0000" else None)

    async def run() -> None:
        store = SQLiteStore(tmp_path / "spool.db", max_dead_letter_bytes=1024)
        await store.open()
        await store.ingest(replace(new_event(0), body=b"{" + b" " * 2000 + b"}"))
        for i in range(1, 6):
            await store.ingest(new_event(i))
        cfg = config(batch_max_events=10)
        d = Dispatcher(sink, cfg, store, Metrics(), poll_seconds=0.02)  # type: ignore[arg-type]
        d.start()
        try:
            await run_until(lambda: sink.calls >= 4)
            assert all(batch == ["e0000"] for batch in sink.batches[1:])
            assert sink.delivered == []
        finally:
            await d.stop()
            await store.close()

    asyncio.run(run())
