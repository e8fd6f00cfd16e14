"""The dispatcher against a real SQLite store and an in-memory sink (a seam we own)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

from receiver.dispatcher import Dispatcher, backoff_delay
from receiver.metrics import Metrics
from receiver.store import NewEvent, SinkStats, SQLiteStore
from sinks import (
    Event,
    PartialDeliveryError,
    PermanentSinkError,
    RetryableSinkError,
    SinkConfig,
    SinkError,
    SinkHealth,
    SinkUnavailableError,
)
from tests.harness import stored_event


class MemoryConfig(SinkConfig):
    type: str = "memory"


class MemorySink:
    """Records batches; ``script`` decides per call what to raise (None = succeed)."""

    config_model: ClassVar[type[SinkConfig]] = MemoryConfig

    def __init__(
        self, script: Callable[[int, Sequence[Event]], SinkError | Exception | None] | None = None
    ):
        self.batches: list[list[str]] = []
        self.delivered: list[str] = []
        self.calls = 0
        self.script = script
        self.start_failures = 0
        self.closed = 0

    async def start(self) -> None:
        if self.start_failures:
            self.start_failures -= 1
            raise PermanentSinkError("cannot start")

    async def send(self, batch: Sequence[Event]) -> None:
        self.calls += 1
        self.batches.append([e.event_id for e in batch])
        err = self.script(self.calls, batch) if self.script else None
        if isinstance(err, PartialDeliveryError):
            self.delivered += [e.event_id for i, e in enumerate(batch) if i not in err.failures]
        if err is not None:
            raise err
        self.delivered += [e.event_id for e in batch]

    async def health(self) -> SinkHealth:
        return SinkHealth(True)

    async def close(self) -> None:
        self.closed += 1


def new_event(i: int, sinks: tuple[str, ...] = ("mem",)) -> NewEvent:
    return stored_event(f"e{i:04d}", sinks=sinks, body=b'{"event_type":"decision_event.created"}')


def config(**kw: object) -> MemoryConfig:
    base: dict[str, object] = {
        "name": "mem",
        "batch_max_wait_seconds": 0,
        "retry_initial_seconds": 0.01,
        "retry_max_seconds": 0.05,
    }
    base.update(kw)
    return MemoryConfig(**base)  # type: ignore[arg-type]


async def run_until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def with_dispatcher(
    tmp: Path,
    sink: MemorySink,
    cfg: MemoryConfig,
    events: int,
    body: Callable[[Dispatcher, SQLiteStore], object],
) -> None:
    store = SQLiteStore(tmp / "spool.db")
    await store.open()
    for i in range(events):
        await store.ingest(new_event(i))
    d = Dispatcher(sink, cfg, store, Metrics(), poll_seconds=0.02)  # type: ignore[arg-type]
    d.start()
    try:
        result = body(d, store)
        if asyncio.iscoroutine(result):
            await result
    finally:
        await d.stop()
        await store.close()


def test_backoff_is_capped_and_jittered() -> None:
    """Delays double, stay within [nominal/2, nominal], and never pass the cap."""
    import random

    rng = random.Random(1)
    for attempt in range(1, 30):
        nominal = min(10.0, 0.5 * 2 ** (attempt - 1))
        d = backoff_delay(attempt, 0.5, 10.0, rng)
        assert nominal / 2 <= d <= nominal


def test_batches_by_count(tmp_path: Path) -> None:
    """Events go out in batches of at most batch_max_events, all delivered once."""
    sink = MemorySink()

    async def body(d: Dispatcher, store: SQLiteStore) -> None:
        await run_until(lambda: d.metrics.delivered.labels("mem")._value.get() == 25)
        assert (await store.stats()).sinks.get("mem", SinkStats()).pending == 0

    asyncio.run(with_dispatcher(tmp_path, sink, config(batch_max_events=10), 25, body))
    assert [len(b) for b in sink.batches] == [10, 10, 5]
    assert sorted(sink.delivered) == sorted(set(sink.delivered))


def test_batches_by_bytes(tmp_path: Path) -> None:
    """A batch stops before it passes batch_max_bytes (at least one event each)."""
    sink = MemorySink()
    size = len(new_event(0).body)

    async def body(d: Dispatcher, store: SQLiteStore) -> None:
        await run_until(lambda: len(sink.delivered) == 10)

    asyncio.run(
        with_dispatcher(tmp_path, sink, config(batch_max_bytes=max(1024, size * 3)), 10, body)
    )
    assert all(len(b) * size <= max(1024, size * 3) for b in sink.batches)


def test_waits_for_batch_to_fill(tmp_path: Path) -> None:
    """Below batch_max_events, events wait up to batch_max_wait_seconds and go together."""
    sink = MemorySink()

    async def body(d: Dispatcher, store: SQLiteStore) -> None:
        await asyncio.sleep(0.1)
        assert sink.calls == 0
        await run_until(lambda: len(sink.delivered) == 3, timeout=5)

    asyncio.run(with_dispatcher(tmp_path, sink, config(batch_max_wait_seconds=0.5), 3, body))
    assert sink.batches == [["e0000", "e0001", "e0002"]]


def test_retryable_then_success(tmp_path: Path) -> None:
    """Retryable errors are retried with backoff until the sink confirms."""
    sink = MemorySink(lambda n, b: RetryableSinkError("busy") if n <= 2 else None)

    async def body(d: Dispatcher, store: SQLiteStore) -> None:
        await run_until(lambda: len(sink.delivered) == 3)
        assert d.metrics.retried.labels("mem")._value.get() == 6

    asyncio.run(with_dispatcher(tmp_path, sink, config(), 3, body))
    assert sink.calls == 3
    assert sink.batches[0] == sink.batches[2]


def test_max_attempts_dead_letters_then_requeue(tmp_path: Path) -> None:
    """After max_attempts an event is dead-lettered; a batch that failed as a whole gets
    one last attempt of its head alone first, so only the event at fault is charged.
    A requeue delivers the dead letters."""
    fail = {"on": True}
    sink = MemorySink(lambda n, b: RetryableSinkError("nope") if fail["on"] else None)

    async def body(d: Dispatcher, store: SQLiteStore) -> None:
        await run_until(lambda: d.metrics.dead_lettered.labels("mem")._value.get() == 2)
        dead = await store.dead_letters()
        assert [(x.event_id, x.attempts) for x in dead] == [("e0000", 4), ("e0001", 3)]
        assert all("max attempts" in x.error for x in dead)
        assert sink.batches == [["e0000", "e0001"]] * 3 + [["e0000"]] + [["e0001"]] * 3
        fail["on"] = False
        assert await store.requeue_dead(now=time.time()) == 2
        d.notify_requeued()
        await run_until(lambda: len(sink.delivered) == 2)
        await run_until(lambda: not d.metrics.delivered.labels("mem")._value.get() < 2)
        assert await store.dead_letters() == []

    asyncio.run(with_dispatcher(tmp_path, sink, config(max_attempts=3), 2, body))


def test_unavailable_is_not_charged(tmp_path: Path) -> None:
    """While the sink is unavailable nothing is dead-lettered, however long it lasts."""
    sink = MemorySink(lambda n, b: SinkUnavailableError("token revoked") if n <= 6 else None)

    async def body(d: Dispatcher, store: SQLiteStore) -> None:
        await run_until(lambda: sink.calls >= 3)
        assert d.up is False
        assert "token revoked" in d.detail
        await run_until(lambda: d.metrics.delivered.labels("mem")._value.get() == 2)
        assert d.up is True
        assert await store.dead_letters() == []

    asyncio.run(with_dispatcher(tmp_path, sink, config(max_attempts=2), 2, body))


def test_permanent_dead_letters_at_once(tmp_path: Path) -> None:
    """A PermanentSinkError dead-letters the batch on the first attempt."""
    sink = MemorySink(lambda n, b: PermanentSinkError("schema refused"))

    async def body(d: Dispatcher, store: SQLiteStore) -> None:
        await run_until(lambda: d.metrics.dead_lettered.labels("mem")._value.get() == 2)
        dead = await store.dead_letters()
        assert {x.error for x in dead} == {"permanent: schema refused"}

    asyncio.run(with_dispatcher(tmp_path, sink, config(), 2, body))
    assert sink.calls == 1


def test_partial_delivery(tmp_path: Path) -> None:
    """Only the failed positions are retried or dead-lettered; the rest count as delivered."""

    def script(n: int, batch: Sequence[Event]) -> SinkError | None:
        if n == 1:
            return PartialDeliveryError(
                {1: PermanentSinkError("poison"), 2: RetryableSinkError("slow")}
            )
        return None

    sink = MemorySink(script)

    async def body(d: Dispatcher, store: SQLiteStore) -> None:
        # The sink records before the dispatcher marks the store: wait on the marks.
        await run_until(lambda: d.metrics.delivered.labels("mem")._value.get() == 3)
        dead = await store.dead_letters()
        assert [x.event_id for x in dead] == ["e0001"]
        assert (await store.stats()).sinks.get("mem", SinkStats()).pending == 0

    asyncio.run(with_dispatcher(tmp_path, sink, config(), 4, body))
    assert sorted(sink.delivered) == ["e0000", "e0002", "e0003"]
    assert sink.batches[1] == ["e0002"]


def test_order_holds_across_retries(tmp_path: Path) -> None:
    """Newer events never overtake older ones that are waiting out a backoff."""
    sink = MemorySink(lambda n, b: RetryableSinkError("x") if n in (1, 2) else None)

    async def body(d: Dispatcher, store: SQLiteStore) -> None:
        await run_until(lambda: sink.calls >= 1)
        for i in range(3, 8):
            await store.ingest(new_event(i))
            d.notify()
        await run_until(lambda: len(sink.delivered) == 8)

    asyncio.run(
        with_dispatcher(
            tmp_path, sink, config(batch_max_events=3, retry_initial_seconds=0.1), 3, body
        )
    )
    assert sink.delivered == sorted(sink.delivered)


def test_max_age_dead_letters(tmp_path: Path) -> None:
    """Events older than max_age_seconds are dead-lettered, not sent."""
    sink = MemorySink()

    async def body(d: Dispatcher, store: SQLiteStore) -> None:
        await run_until(lambda: d.metrics.dead_lettered.labels("mem")._value.get() == 2)
        assert "expired" in (await store.dead_letters())[0].error

    async def run() -> None:
        store = SQLiteStore(tmp_path / "spool.db")
        await store.open()
        for i in range(2):
            await store.ingest(_aged(new_event(i), 100))
        d = Dispatcher(sink, config(max_age_seconds=10), store, Metrics(), poll_seconds=0.02)  # type: ignore[arg-type]
        d.start()
        try:
            await body(d, store)
        finally:
            await d.stop()
            await store.close()

    asyncio.run(run())
    assert sink.calls == 0


def _aged(ev: NewEvent, seconds: float) -> NewEvent:
    from dataclasses import replace

    return replace(ev, received_at=ev.received_at - seconds)


def test_sink_bug_is_retried_not_lost(tmp_path: Path) -> None:
    """An unexpected exception from a sink is treated as retryable."""
    sink = MemorySink(lambda n, b: ValueError("bug") if n == 1 else None)

    async def body(d: Dispatcher, store: SQLiteStore) -> None:
        await run_until(lambda: len(sink.delivered) == 1)

    asyncio.run(with_dispatcher(tmp_path, sink, config(), 1, body))
    assert sink.calls == 2


def test_start_failure_retried(tmp_path: Path) -> None:
    """A sink that fails to start is retried with backoff; the loop does not die."""
    sink = MemorySink()
    sink.start_failures = 2

    async def body(d: Dispatcher, store: SQLiteStore) -> None:
        await run_until(lambda: len(sink.delivered) == 1, timeout=15)

    asyncio.run(with_dispatcher(tmp_path, sink, config(retry_max_seconds=0.5), 1, body))
    assert sink.closed == 1


def test_delivered_only_after_confirmation(tmp_path: Path) -> None:
    """While send() has not returned, the outbox row stays pending."""
    gate = asyncio.Event()

    class SlowSink(MemorySink):
        async def send(self, batch: Sequence[Event]) -> None:
            self.calls += 1
            await gate.wait()
            self.delivered += [e.event_id for e in batch]

    sink = SlowSink()

    async def body(d: Dispatcher, store: SQLiteStore) -> None:
        await run_until(lambda: sink.calls == 1)
        assert (await store.stats()).sinks.get("mem", SinkStats()).pending == 1
        gate.set()
        await run_until(lambda: len(sink.delivered) == 1)
        await run_until(lambda: d.metrics.delivered.labels("mem")._value.get() == 1)
        assert (await store.stats()).sinks.get("mem", SinkStats()).pending == 0

    asyncio.run(with_dispatcher(tmp_path, sink, config(), 1, body))


def test_partial_with_unavailable_is_not_charged(tmp_path: Path) -> None:
    """Events a partial failure reports as 'sink unavailable' wait uncharged; the sink shows down."""

    def script(n: int, batch: Sequence[Event]) -> SinkError | None:
        if n == 1:
            return PartialDeliveryError({1: SinkUnavailableError("token disabled")})
        return None

    sink = MemorySink(script)

    async def body(d: Dispatcher, store: SQLiteStore) -> None:
        await run_until(lambda: sink.calls >= 1)
        await run_until(lambda: d.up is False or len(sink.delivered) == 3)
        await run_until(lambda: d.metrics.delivered.labels("mem")._value.get() == 3)
        assert await store.dead_letters() == []

    asyncio.run(with_dispatcher(tmp_path, sink, config(max_attempts=1), 3, body))
    assert sink.batches[1] == ["e0001"]


def test_health_shown_before_any_event(tmp_path: Path) -> None:
    """A failing health check marks the sink down while idle; recovery marks it up."""
    state = {"ok": False}

    class Checked(MemorySink):
        async def health(self) -> SinkHealth:
            return SinkHealth(state["ok"], "" if state["ok"] else "token rejected")

    sink = Checked()

    async def run() -> None:
        store = SQLiteStore(tmp_path / "spool.db")
        await store.open()
        d = Dispatcher(
            sink,
            config(),
            store,
            Metrics(),
            poll_seconds=0.02,  # type: ignore[arg-type]
            health_interval_seconds=0.05,
        )
        d.start()
        try:
            await run_until(lambda: d.up is False and d.detail == "token rejected")
            state["ok"] = True
            await run_until(lambda: d.up is True)
        finally:
            await d.stop()
            await store.close()

    asyncio.run(run())


def test_requeued_expired_event_gets_a_fresh_chance(tmp_path: Path) -> None:
    """An event dead-lettered for age and re-queued is sent, not expired again at once."""
    sink = MemorySink()

    async def run() -> None:
        store = SQLiteStore(tmp_path / "spool.db")
        await store.open()
        await store.ingest(_aged(new_event(0), 100))
        d = Dispatcher(sink, config(max_age_seconds=10), store, Metrics(), poll_seconds=0.02)  # type: ignore[arg-type]
        d.start()
        try:
            await run_until(lambda: d.metrics.dead_lettered.labels("mem")._value.get() == 1)
            assert sink.calls == 0
            assert await store.requeue_dead(now=time.time()) == 1
            d.notify_requeued()
            await run_until(lambda: d.metrics.delivered.labels("mem")._value.get() == 1)
            assert await store.dead_letters() == []
        finally:
            await d.stop()
            await store.close()

    asyncio.run(run())


def test_unavailable_waits_at_least_retry_after(tmp_path: Path) -> None:
    """A destination's Retry-After is waited out (uncharged) before the same events go again."""
    times: list[float] = []

    def script(n: int, batch: Sequence[Event]) -> SinkError | None:
        times.append(time.monotonic())
        return SinkUnavailableError("throttled", retry_after=0.6) if n == 1 else None

    sink = MemorySink(script)

    async def body(d: Dispatcher, store: SQLiteStore) -> None:
        await run_until(lambda: len(sink.delivered) == 2)
        assert times[1] - times[0] >= 0.6
        assert await store.dead_letters() == []

    cfg = config(retry_initial_seconds=0.01, retry_max_seconds=5.0, max_attempts=1)
    asyncio.run(with_dispatcher(tmp_path, sink, cfg, 2, body))


def test_retry_after_is_capped_by_retry_max(tmp_path: Path) -> None:
    """An absurd Retry-After cannot park the sink past retry_max_seconds."""
    times: list[float] = []

    def script(n: int, batch: Sequence[Event]) -> SinkError | None:
        times.append(time.monotonic())
        return SinkUnavailableError("throttled", retry_after=3600) if n == 1 else None

    sink = MemorySink(script)

    async def body(d: Dispatcher, store: SQLiteStore) -> None:
        await run_until(lambda: len(sink.delivered) == 1, timeout=5)
        assert times[1] - times[0] < 2.0

    asyncio.run(with_dispatcher(tmp_path, sink, config(retry_max_seconds=0.3), 1, body))
