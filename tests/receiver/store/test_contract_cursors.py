"""The Store contract for cursors, leases, done sets and dead letters, on both backends."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from receiver.errors import DeadLetterBudgetError, LeaseLostError
from receiver.store import DeadEvent, IngestOutcome, Progress, RequeueSettlement, Route
from tests.receiver.store.backends import (
    ALL,
    T0,
    Backend,
    backend,
    drain,
    lease_on,
    new_event,
)
from tests.services.postgres import pg_schema, postgres_url

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- cursors and leases -------------------------------------------------------------------


async def test_new_cursor_starts_at_the_end_of_the_log(backend: Backend) -> None:
    """A sink configured now gets the events stored from now on, not the older ones."""
    async with backend.opened() as store:
        await store.ingest(new_event("before"))
        await store.ensure_cursors([Route("late", ALL)])
        await store.ingest(new_event("after"))
        assert await drain(store, "late") == ["after"]
        assert await store.cursor_sinks() == ["late"]


async def test_one_owner_at_a_time_and_fencing(backend: Backend) -> None:
    """A held lease is refused to others; a lease taken over fences the old owner out."""
    async with backend.opened() as store:
        await store.ingest(new_event("e1"))
        mine = await lease_on(store, owner="one")
        assert await store.acquire("a", "two", lease_seconds=60) is None
        assert await store.renew(mine, lease_seconds=60)
        await store.release_lease(mine)
        theirs = await lease_on(store, owner="two")
        assert theirs.fence > mine.fence
        assert not await store.renew(mine, lease_seconds=60)
        with pytest.raises(LeaseLostError):
            await store.advance(mine, Progress((0, 99), dead=(DeadEvent(1, (0, 1), 1, "x"),)))
        assert await store.dead_letters() == []  # the refused write left nothing behind


async def test_expired_lease_goes_to_the_next_dispatcher(backend: Backend) -> None:
    """A lease not renewed in time can be taken; the late owner writes nothing."""
    async with backend.opened() as store:
        await store.ingest(new_event("e1"))
        old = await store.acquire("a", "one", lease_seconds=1)
        assert old is not None
        assert await store.acquire("a", "two", lease_seconds=60) is None
        await asyncio.sleep(1.2)
        new = await store.acquire("a", "two", lease_seconds=60)
        assert new is not None
        with pytest.raises(LeaseLostError):
            await store.advance(old, Progress((0, 10**9)))
        batch = await store.read(new, Route("a", ALL), limit=10, max_bytes=10**6)
        assert [e.event_id for e in batch.events] == ["e1"]


# -- reading --------------------------------------------------------------------------------


async def test_read_respects_limits_in_log_order(backend: Backend) -> None:
    """Reads take the oldest events up to the limits; the first always comes."""
    async with backend.opened() as store:
        for i in range(5):
            await store.ingest(new_event(f"e{i}", body=b"y" * 100))
        lease = await lease_on(store)
        route = Route("a", ALL)
        first = await store.read(lease, route, limit=2, max_bytes=10**6)
        assert [e.event_id for e in first.events] == ["e0", "e1"]
        assert first.more
        assert first.scanned_to == first.positions[-1]
        assert first.events[0].body == b"y" * 100
        lease = await store.advance(lease, Progress(first.scanned_to))
        by_bytes = await store.read(lease, route, limit=10, max_bytes=250)
        assert [e.event_id for e in by_bytes.events] == ["e2", "e3"]
        lease = await store.advance(lease, Progress(by_bytes.scanned_to))
        one_big = await store.read(lease, route, limit=10, max_bytes=1)
        assert [e.event_id for e in one_big.events] == ["e4"]
        assert not one_big.more
        lease = await store.advance(lease, Progress(one_big.scanned_to))
        empty = await store.read(lease, route, limit=10, max_bytes=10**6)
        assert empty.events == ()
        assert empty.scanned_to == lease.position


async def test_routes_filter_and_the_cursor_passes_the_rest(backend: Backend) -> None:
    """Only routed types are read; the cursor moves past the others."""
    async with backend.opened() as store:
        types = ["rule.patch_applied", "decision_event.created"] * 3
        for i, t in enumerate(types):
            await store.ingest(new_event(f"e{i}", event_type=t))
        assert await drain(store, "a", ("decision_event.*",)) == ["e1", "e3", "e5"]
        lease = await lease_on(store)
        assert lease.position[1] >= 6
        assert (await store.stats()).sinks["a"].pending == 0


async def test_a_batch_held_to_fill_is_counted_on_not_reread(backend: Backend) -> None:
    """A young partial batch is held (no bodies read) with what it holds so far; the next
    read given that count looks only at the log after it, and loads the whole batch once
    it is full or old enough."""
    async with backend.opened() as store:
        for i in range(3):
            await store.ingest(new_event(f"e{i}", body=b"y" * 100))
        await store.ingest(new_event("r0", event_type="rule.patch_applied"))
        lease = await lease_on(store)
        route = Route("a", ("decision_event.*",))
        kw = {"limit": 10, "max_bytes": 10**6, "fill_wait": 60.0}
        held = await store.read(lease, route, now=T0 + 1, **kw)
        assert (held.events, held.ready_at) == ((), T0 + 60)
        assert held.filling is not None
        assert (held.filling.events, held.filling.size, held.filling.first_at) == (3, 300, T0)
        assert held.filling.base == lease.position
        assert held.scanned_to == lease.position  # held: the cursor may not move
        await store.ingest(new_event("e3", body=b"y" * 100))
        await store.ingest(new_event("r1", event_type="rule.patch_applied"))
        grown = await store.read(lease, route, now=T0 + 2, filling=held.filling, **kw)
        assert grown.filling is not None
        assert (grown.filling.events, grown.filling.size) == (4, 400)
        assert grown.filling.scanned_to > held.filling.scanned_to
        # Only the rows after the count are looked at: a count said to be near the limit
        # fills with the next event, though the log holds fewer, and the batch then goes.
        near = dataclasses.replace(grown.filling, events=9)
        await store.ingest(new_event("e4", body=b"y" * 100))
        full = await store.read(lease, route, now=T0 + 3, filling=near, **kw)
        assert [e.event_id for e in full.events] == ["e0", "e1", "e2", "e3", "e4"]
        assert (full.ready_at, full.filling) == (None, None)
        # Old enough: the held batch goes, read whole from the cursor.
        aged = await store.read(lease, route, now=T0 + 61, filling=grown.filling, **kw)
        assert [e.event_id for e in aged.events] == ["e0", "e1", "e2", "e3", "e4"]
        lease = await store.advance(lease, Progress(aged.scanned_to))
        # A count from an earlier cursor position is ignored.
        await store.ingest(new_event("e5", body=b"y" * 100, received_at=T0 + 100))
        fresh = await store.read(lease, route, now=T0 + 101, filling=grown.filling, **kw)
        assert fresh.filling is not None
        assert (fresh.filling.events, fresh.filling.first_at) == (1, T0 + 100)


async def test_a_full_batch_is_not_held(backend: Backend) -> None:
    """A batch at its event or byte limit goes at once, however young."""
    async with backend.opened() as store:
        for i in range(3):
            await store.ingest(new_event(f"e{i}", body=b"y" * 100))
        lease = await lease_on(store)
        by_count = await store.read(
            lease, Route("a", ALL), limit=3, max_bytes=10**6, fill_wait=60.0, now=T0
        )
        assert len(by_count.events) == 3
        by_bytes = await store.read(
            lease, Route("a", ALL), limit=10, max_bytes=300, fill_wait=60.0, now=T0
        )
        assert len(by_bytes.events) == 3


async def test_done_set_is_skipped_and_dropped_as_the_cursor_passes(backend: Backend) -> None:
    """Events a sink took above its cursor are not read again."""
    async with backend.opened() as store:
        for i in range(4):
            await store.ingest(new_event(f"e{i}"))
        lease = await lease_on(store)
        route = Route("a", ALL)
        batch = await store.read(lease, route, limit=10, max_bytes=10**6)
        p = batch.positions
        # e0 failed (the head stays), e1 and e3 were delivered, e2 failed too.
        lease = await store.advance(
            lease,
            Progress(lease.position, done=(p[1], p[3]), attempts=1, next_attempt_at=T0 + 5),
        )
        assert (lease.attempts, lease.next_attempt_at) == (1, T0 + 5)
        again = await store.read(lease, route, limit=10, max_bytes=10**6)
        assert [e.event_id for e in again.events] == ["e0", "e2"]
        lease = await store.advance(lease, Progress(again.scanned_to))
        assert lease.attempts == 0
        assert (await store.read(lease, route, limit=10, max_bytes=10**6)).events == ()
        assert backend.sql("SELECT count(*) FROM cursor_done") == [(0,)]


# -- dead letters -------------------------------------------------------------------------


async def test_dead_letters_listed_requeued_delivered_and_purged(backend: Backend) -> None:
    """Dead letters are listed and paged; a re-queued one is read, retried, delivered."""
    async with backend.opened() as store:
        for i in range(3):
            await store.ingest(new_event(f"e{i}"))
        lease = await lease_on(store)
        batch = await store.read(lease, Route("a", ALL), limit=10, max_bytes=10**6)
        dead = tuple(
            DeadEvent(e.seq, p, 1, f"bad {n}")
            for n, (e, p) in enumerate(zip(batch.events, batch.positions, strict=True))
        )
        lease = await store.advance(lease, Progress(batch.scanned_to, dead=dead))
        listed = await store.dead_letters()
        assert [(d.sink, d.event_id, d.attempts, d.error, d.state) for d in listed] == [
            ("a", "e0", 1, "bad 0", "dead"),
            ("a", "e1", 1, "bad 1", "dead"),
            ("a", "e2", 1, "bad 2", "dead"),
        ]
        assert [d.event_id for d in await store.dead_letters(limit=1, after_id=listed[0].id)] == [
            "e1"
        ]
        stats = await store.stats()
        assert (stats.sinks["a"].dead, stats.dead_events) == (3, 3)
        assert await store.requeue_dead(ids=[listed[0].id, listed[1].id], now=T0) == 2
        due = await store.requeued("a", now=T0, limit=10, max_bytes=10**6)
        assert [(r.event.event_id, r.attempts) for r in due] == [("e0", 0), ("e1", 0)]
        ids = [r.dead_letter_id for r in due]
        await store.settle_requeued(
            lease,
            RequeueSettlement(delivered=(ids[0],), retry=((ids[1], T0 + 60, "again", True),)),
        )
        assert await store.requeued("a", now=T0 + 59, limit=10, max_bytes=10**6) == []
        later = await store.requeued("a", now=T0 + 60, limit=10, max_bytes=10**6)
        assert [(r.event.event_id, r.attempts) for r in later] == [("e1", 1)]
        await store.settle_requeued(lease, RequeueSettlement(dead=((ids[1], "no"),)))
        assert [(d.event_id, d.state) for d in await store.dead_letters()] == [
            ("e1", "dead"),
            ("e2", "dead"),
        ]
        assert await store.purge_dead(sink="a") == 2
        assert await store.dead_letters() == []
        await store.release()
        stats = await store.stats()
        assert (stats.spool_events, stats.dead_events, stats.dead_bytes) == (0, 0, 0)
        assert backend.sql("SELECT count(*) FROM events WHERE body IS NOT NULL") == [(0,)]


async def test_dead_letter_budget_refuses_the_whole_outcome(backend: Backend) -> None:
    """New dead letters over their byte limit are refused and nothing is written."""
    async with backend.opened(max_dead_letter_bytes=1500) as store:
        await store.ingest(new_event("e0", body=b"q" * 1000))
        await store.ingest(new_event("e1", body=b"q" * 1000))
        lease = await lease_on(store)
        batch = await store.read(lease, Route("a", ALL), limit=10, max_bytes=10**6)
        e0, e1 = batch.events
        lease = await store.advance(
            lease,
            Progress(batch.positions[0], dead=(DeadEvent(e0.seq, batch.positions[0], 1, "x"),)),
        )
        with pytest.raises(DeadLetterBudgetError, match="max_dead_letter_bytes"):
            await store.advance(
                lease,
                Progress(batch.scanned_to, dead=(DeadEvent(e1.seq, batch.positions[1], 1, "y"),)),
            )
        assert [d.event_id for d in await store.dead_letters()] == ["e0"]
        again = await store.read(lease, Route("a", ALL), limit=10, max_bytes=10**6)
        assert [e.event_id for e in again.events] == ["e1"]  # the cursor did not move


async def test_retire_sink_dead_letters_what_it_still_had(backend: Backend) -> None:
    """A removed sink's routed, unfinished events become dead letters; its cursor goes."""
    async with backend.opened() as store:
        await store.ensure_cursors([Route("gone", ("decision_event.*",))])
        await store.ingest(new_event("d1"))
        await store.ingest(new_event("r1", event_type="rule.patch_applied"))
        await store.ingest(new_event("d2"))
        moved = await store.retire_sink("gone", "sink 'gone' is not configured", now=T0)
        assert moved == 2
        assert [(d.sink, d.event_id, d.error) for d in await store.dead_letters()] == [
            ("gone", "d1", "sink 'gone' is not configured"),
            ("gone", "d2", "sink 'gone' is not configured"),
        ]
        assert "gone" not in await store.cursor_sinks()
        assert await store.retire_sink("gone", "again", now=T0) == 0
        assert await store.requeue_dead(sink="gone", now=T0) == 2


# -- PostgreSQL: several writers and readers at once -------------------------------------


async def test_concurrent_writers_never_let_a_cursor_skip_an_event(pg_schema: str) -> None:
    """The sequence trap: a row whose transaction commits after a later seq became
    visible must still be read. Slow transactions hold low seqs while fast ones commit;
    a reader draining all the while must end with every event, each once. (SQLite
    commits one transaction at a time: its seq order is commit order.)"""
    import psycopg

    from receiver.store._postgres_sql import STORE_GROUP

    async def slow_writer(n: int) -> None:
        async with await psycopg.AsyncConnection.connect(pg_schema) as conn:
            for k in range(6):
                async with conn.transaction():
                    ev = new_event(f"slow{n}-{k}")
                    cols = [
                        [v]
                        for v in (
                            ev.source,
                            ev.event_id,
                            ev.id_origin,
                            ev.event_type,
                            ev.category,
                            ev.occurred_at,
                            ev.received_at,
                            ev.delivery_id,
                            ev.signature,
                            ev.timestamp,
                            len(ev.body),
                            ev.body,
                        )
                    ]
                    await conn.execute(STORE_GROUP, [*cols, 0])
                    await asyncio.sleep(0.15)  # the seq is taken; the commit comes late

    backend = Backend("postgres", pg_schema)
    async with backend.opened() as store, backend.opened() as reader:
        await store.ensure_cursors([Route("a", ALL)])
        stop = asyncio.Event()
        seen: list[str] = []

        async def read_all_the_time() -> None:
            lease = await lease_on(reader)
            while True:
                batch = await reader.read(lease, Route("a", ALL), limit=50, max_bytes=10**9)
                seen.extend(e.event_id for e in batch.events)
                lease = await reader.advance(lease, Progress(batch.scanned_to))
                if stop.is_set() and not batch.events and not batch.more:
                    return
                await asyncio.sleep(0.005)

        async def fast_writer() -> None:
            for i in range(150):
                result = await store.ingest(new_event(f"fast{i}"))
                assert result.outcome is IngestOutcome.ACCEPTED
                await asyncio.sleep(0.003)

        reading = asyncio.ensure_future(read_all_the_time())
        await asyncio.gather(fast_writer(), *(slow_writer(n) for n in range(4)))
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.wait_for(reading, 30)
        expected = {f"fast{i}" for i in range(150)} | {
            f"slow{n}-{k}" for n in range(4) for k in range(6)
        }
        assert len(seen) == len(set(seen))
        assert set(seen) == expected


async def test_one_event_the_database_refuses_fails_alone(postgres_url: str) -> None:
    """In a LATIN1 database an id it cannot hold fails only its own request."""
    import uuid

    import psycopg

    from receiver.errors import EventRefusedError

    name = f"bighub_latin1_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            f"CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'"
            " TEMPLATE template0"
        )
    try:
        url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
        async with Backend("postgres", url).opened() as store:
            good = [store.ingest(new_event(f"ok{i}")) for i in range(99)]
            bad = store.ingest(new_event("snow\u2603man"))
            results = await asyncio.gather(*good, bad, return_exceptions=True)
            assert all(
                not isinstance(r, BaseException) and r.outcome is IngestOutcome.ACCEPTED
                for r in results[:99]
            )
            assert isinstance(results[99], EventRefusedError)
            assert len(await drain(store)) == 99
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
