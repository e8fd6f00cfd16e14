"""Two dispatchers for one sink on one PostgreSQL store: one owns the cursor at a time,
sends longer than the lease never overlap, a lost lease stops its owner before it
writes anything, and a retryable error never becomes a dead letter."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from receiver.dispatcher import Dispatcher
from receiver.errors import StoreError
from receiver.metrics import Metrics
from receiver.settings import StoreSettings
from receiver.store import Lease, Route, Store, create_store
from sinks import Event, RetryableSinkError
from tests.receiver.store.backends import new_event
from tests.receiver.test_dispatcher import MemoryConfig, run_until
from tests.services.postgres import pg_schema, postgres_url

pytestmark = pytest.mark.anyio

LEASE = 1.0  # seconds; every send below takes longer
SEND = 2.5


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Ledger:
    """Every send, by whom and when: (owner, event ids, started, ended)."""

    sends: list[tuple[str, list[str], float, float]] = field(default_factory=list)
    active: dict[str, set[str]] = field(default_factory=dict)
    overlaps: list[str] = field(default_factory=list)


class SlowSink:
    """Takes SEND seconds per batch; records who sends what, flags concurrent sends."""

    config_model = MemoryConfig

    def __init__(self, who: str, ledger: Ledger, fail_first: int = 0) -> None:
        self.who, self.ledger, self.fail_first = who, ledger, fail_first

    async def start(self) -> None: ...

    async def send(self, batch: Sequence[Event]) -> None:
        ids = {e.event_id for e in batch}
        for other, theirs in self.ledger.active.items():
            if other != self.who and ids & theirs:
                self.ledger.overlaps.append(f"{self.who} and {other}: {sorted(ids & theirs)}")
        self.ledger.active[self.who] = ids
        started = time.monotonic()
        try:
            await asyncio.sleep(SEND)
        finally:
            self.ledger.active.pop(self.who, None)
        self.ledger.sends.append((self.who, sorted(ids), started, time.monotonic()))
        if self.fail_first:
            self.fail_first -= 1
            raise RetryableSinkError("busy")

    async def health(self) -> Any:
        from sinks import SinkHealth

        return SinkHealth(True)

    async def close(self) -> None: ...


def cfg() -> MemoryConfig:
    return MemoryConfig(
        name="mem",
        batch_max_events=5,
        batch_max_wait_seconds=0,
        max_attempts=1,  # one charged failure would be a dead letter, were it charged twice
        retry_initial_seconds=0.1,
        retry_max_seconds=0.2,
    )


def dispatcher(store: Store, sink: SlowSink) -> Dispatcher:
    return Dispatcher(
        sink,  # type: ignore[arg-type]
        cfg(),
        store,
        Metrics(),
        lease_seconds=LEASE,
        poll_seconds=0.05,
        owner=sink.who,
    )


async def test_sends_longer_than_the_lease_never_overlap(pg_schema: str) -> None:
    """Both dispatchers run; the owner renews while it sends 2.5 s batches on a 1 s
    lease, so the other never sends the same events (0.1.0: both sent the same 4)."""
    ledger = Ledger()
    one, two = (create_store(StoreSettings(url=pg_schema)) for _ in range(2))
    await one.open()
    await two.open()
    await one.ensure_cursors([Route("mem", ("*",))])
    for i in range(12):
        await one.ingest(new_event(f"e{i:02d}", sinks=("mem",)))
    a = dispatcher(one, SlowSink("A", ledger, fail_first=1))
    b = dispatcher(two, SlowSink("B", ledger))
    a.start()
    await asyncio.sleep(0.3)
    b.start()
    try:
        await run_until(lambda: _delivered(a) + _delivered(b) >= 12, timeout=60)
    finally:
        await asyncio.gather(a.stop(grace_seconds=5), b.stop(grace_seconds=5))
    assert ledger.overlaps == []
    sent_ok = [ids for _, ids, _, _ in ledger.sends[1:]]  # the first send failed, retried
    flat = [i for ids in sent_ok for i in ids]
    assert sorted(flat) == [f"e{i:02d}" for i in range(12)]
    assert await one.dead_letters(state="all") == []  # retryable, with max_attempts 1
    await one.close()
    await two.close()


def _delivered(d: Dispatcher) -> float:
    return float(d.metrics.delivered.labels("mem")._value.get())


class RenewFails:
    """A store whose renewals fail (the owner cannot reach the database for them)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def renew(self, lease: Lease, *, lease_seconds: float) -> bool:
        raise StoreError("postgresql: connection refused")


async def test_an_owner_that_cannot_renew_stops_before_another_takes_over(
    pg_schema: str,
) -> None:
    """When renewals fail, the owner abandons its send before its lease can run out,
    writes nothing, and the standby takes over and delivers: never both at once."""
    ledger = Ledger()
    one, two = (create_store(StoreSettings(url=pg_schema)) for _ in range(2))
    await one.open()
    await two.open()
    await one.ensure_cursors([Route("mem", ("*",))])
    for i in range(5):
        await one.ingest(new_event(f"e{i}", sinks=("mem",)))
    a = dispatcher(RenewFails(one), SlowSink("A", ledger))  # type: ignore[arg-type]
    b = dispatcher(two, SlowSink("B", ledger))
    a.start()
    await run_until(lambda: "A" in ledger.active)
    b.start()
    try:
        await run_until(lambda: b.metrics.delivered.labels("mem")._value.get() >= 5, timeout=30)
    finally:
        await asyncio.gather(a.stop(grace_seconds=2), b.stop(grace_seconds=2))
    assert ledger.overlaps == []
    assert [who for who, _, _, _ in ledger.sends] == ["B"]  # A's send was abandoned
    assert a.metrics.delivered.labels("mem")._value.get() == 0
    await one.close()
    await two.close()
