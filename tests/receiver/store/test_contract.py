"""The Store contract for ingest, quota, upkeep and schema: the same tests on SQLite and
PostgreSQL (cursors and dead letters: test_contract_cursors.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from receiver.errors import OverloadedError, StoreError
from receiver.store import IngestOutcome, Progress, ReplayRecord, Route, Store
from tests.receiver.store.backends import (
    ALL,
    T0,
    WINDOW,
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


# -- ingest and dedup ---------------------------------------------------------------------


async def test_ingest_accepts_new_and_answers_duplicate(backend: Backend) -> None:
    """A new event is accepted with a seq; the same (source, id) again is a duplicate."""
    async with backend.opened() as store:
        first = await store.ingest(new_event("e1"))
        again = await store.ingest(new_event("e1", body=b'{"other":"body"}'))
        other_source = await store.ingest(new_event("e1", source="staging"))
        assert first.outcome is IngestOutcome.ACCEPTED
        assert first.seq is not None
        assert again.outcome is IngestOutcome.DUPLICATE
        assert other_source.outcome is IngestOutcome.ACCEPTED
        assert await store.has_event("bighub", "e1")
        assert not await store.has_event("bighub", "e2")
        assert await store.has_delivery("bighub", "dlv_e1")


async def test_dedup_survives_reopen(backend: Backend) -> None:
    """An event stored before a restart is still a duplicate after it."""
    async with backend.opened() as store:
        assert (await store.ingest(new_event("e1"))).outcome is IngestOutcome.ACCEPTED
    async with backend.opened() as store:
        assert (await store.ingest(new_event("e1"))).outcome is IngestOutcome.DUPLICATE
        assert await drain(store) == ["e1"]


async def test_group_commit_keeps_every_concurrent_event(backend: Backend) -> None:
    """Many concurrent ingests are all durable, in fewer transactions than events."""
    async with backend.opened() as store:
        results = await asyncio.gather(*(store.ingest(new_event(f"e{i}")) for i in range(300)))
        assert all(r.outcome is IngestOutcome.ACCEPTED for r in results)
        assert len({r.seq for r in results}) == 300
        commits = (await store.stats()).ingest_commits
        assert 1 <= commits < 300
    async with backend.opened() as store:  # durable: visible to a fresh connection
        assert (await store.stats()).events_held == 300
        assert len(await drain(store)) == 300


async def test_burst_of_large_bodies_is_split_into_groups(backend: Backend) -> None:
    """A burst bigger than one group's byte budget is stored whole, over several commits."""
    async with backend.opened(max_queue_bytes=64 * 1024**2) as store:
        body = b"{" + b" " * (1024**2 - 2) + b"}"
        results = await asyncio.gather(
            *(store.ingest(new_event(f"big{i}", body=body)) for i in range(40))
        )
        assert all(r.outcome is IngestOutcome.ACCEPTED for r in results)
        stats = await store.stats()
        assert (stats.spool_events, stats.spool_bytes) == (40, 40 * len(body))
        assert len(await drain(store)) == 40


async def test_concurrent_copies_of_one_event_accepted_once(backend: Backend) -> None:
    """Copies arriving together (one group or several) store the event once."""
    async with backend.opened() as store:
        results = await asyncio.gather(*(store.ingest(new_event("same")) for _ in range(40)))
        outcomes = [r.outcome for r in results]
        assert outcomes.count(IngestOutcome.ACCEPTED) == 1
        assert outcomes.count(IngestOutcome.DUPLICATE) == 39
        assert await drain(store) == ["same"]


async def test_two_writers_with_the_same_events_store_each_once(backend: Backend) -> None:
    """Two processes taking the same events in opposite orders store each exactly once."""
    async with backend.opened() as one, backend.opened() as two:
        for round_ in range(8):
            names = [f"r{round_}e{i}" for i in range(100)]
            a, b = await asyncio.gather(
                asyncio.gather(*(one.ingest(new_event(n)) for n in names)),
                asyncio.gather(*(two.ingest(new_event(n)) for n in reversed(names))),
            )
            won = [
                (x.outcome is IngestOutcome.ACCEPTED) + (y.outcome is IngestOutcome.ACCEPTED)
                for x, y in zip(a, reversed(b), strict=True)
            ]
            assert won == [1] * len(names)
        assert len(set(await drain(one))) == 800


async def test_event_routed_nowhere_here_is_kept_for_other_routes(backend: Backend) -> None:
    """An event this process routes nowhere keeps its body: routes apply at dispatch, and
    another replica's sink may take it (a rolling deploy adding a sink). Once every cursor
    passed it, release drops the body; it is deduplicated throughout."""
    async with backend.opened() as store:
        await store.ensure_cursors([Route("a", ("rule.*",)), Route("new", ("decision_event.*",))])
        assert (await store.ingest(new_event("e1", sinks=()))).outcome is IngestOutcome.ACCEPTED
        assert (await store.ingest(new_event("e1", sinks=()))).outcome is IngestOutcome.DUPLICATE
        assert await drain(store, "a", ("rule.*",)) == []
        assert await drain(store, "new", ("decision_event.*",)) == ["e1"]
        await store.release()
        stats = await store.stats()
        assert (stats.spool_events, stats.spool_bytes, stats.events_held) == (0, 0, 1)


# -- admission control ------------------------------------------------------------------


async def test_queue_bound_refuses_at_once_when_full(backend: Backend) -> None:
    """Over the in-flight bound an ingest is refused immediately, never queued."""
    async with backend.opened(max_queue_events=5) as store:
        calls = [asyncio.ensure_future(store.ingest(new_event(f"e{i}"))) for i in range(20)]
        await asyncio.wait(calls, timeout=10)
        refused = [c for c in calls if isinstance(c.exception(), OverloadedError)]
        stored = [c for c in calls if c.exception() is None]
        assert len(stored) == 5
        assert len(refused) == 15
        assert (await store.stats()).events_held == 5


async def test_client_gone_before_its_group_is_dropped(backend: Backend) -> None:
    """A queued ingest whose client went away is not committed (the sender retries)."""
    async with backend.opened() as store:
        gone = store.ingest(new_event("gone"), alive=lambda: False)
        kept = store.ingest(new_event("kept"), alive=lambda: True)
        results = await asyncio.gather(gone, kept, return_exceptions=True)
        assert isinstance(results[0], OverloadedError)
        assert not isinstance(results[1], BaseException)
        assert not await store.has_event("bighub", "gone")
        assert await store.has_event("bighub", "kept")


# -- quota --------------------------------------------------------------------------------


async def test_quota_refuses_and_stores_nothing(backend: Backend) -> None:
    """Over the event quota: QUOTA, nothing stored; a held event is still a duplicate."""
    async with backend.opened(max_spool_events=2) as store:
        assert (await store.ingest(new_event("e1"))).outcome is IngestOutcome.ACCEPTED
        assert (await store.ingest(new_event("e2"))).outcome is IngestOutcome.ACCEPTED
        assert (await store.ingest(new_event("e3"))).outcome is IngestOutcome.QUOTA
        assert not await store.has_event("bighub", "e3")
        assert (await store.ingest(new_event("e1"))).outcome is IngestOutcome.DUPLICATE
        stats = await store.stats()
        assert (stats.spool_events, stats.events_held) == (2, 2)


async def test_byte_quota_counts_bodies(backend: Backend) -> None:
    """The byte quota refuses a body that would push the spool over it."""
    async with backend.opened(max_spool_bytes=1024) as store:
        body = b"x" * 600
        assert (await store.ingest(new_event("e1", body=body))).outcome is IngestOutcome.ACCEPTED
        assert (await store.ingest(new_event("e2", body=body))).outcome is IngestOutcome.QUOTA
        assert (await store.stats()).spool_bytes == 600


async def test_quota_concurrent_group_refuses_the_excess(backend: Backend) -> None:
    """A concurrent burst over the quota is cut at the quota, the rest refused."""
    async with backend.opened(max_spool_events=10) as store:
        results = await asyncio.gather(*(store.ingest(new_event(f"e{i}")) for i in range(25)))
        outcomes = [r.outcome for r in results]
        assert outcomes.count(IngestOutcome.ACCEPTED) == 10
        assert outcomes.count(IngestOutcome.QUOTA) == 15
        assert (await store.stats()).events_held == 10


async def test_cursor_passing_frees_quota(backend: Backend) -> None:
    """Once every cursor passed an event (and release ran) its room is free again."""
    async with backend.opened(max_spool_events=1) as store:
        await store.ensure_cursors([])
        await store.ingest(new_event("e1"))
        assert (await store.ingest(new_event("e2"))).outcome is IngestOutcome.QUOTA
        assert await drain(store) == ["e1"]
        assert await store.release() == 1
        stats = await store.stats()
        assert (stats.spool_events, stats.spool_bytes) == (0, 0)
        assert (await store.ingest(new_event("e2"))).outcome is IngestOutcome.ACCEPTED


async def test_release_waits_for_the_slowest_cursor(backend: Backend) -> None:
    """Bodies stay until every cursor passed them; dead letters keep theirs apart."""
    async with backend.opened() as store:
        for i in range(4):
            await store.ingest(new_event(f"e{i}", body=b"z" * 50))
        slow = await lease_on(store, "b")
        assert await drain(store, "a") == ["e0", "e1", "e2", "e3"]
        assert await store.release() == 0  # "b" has not moved
        batch = await store.read(slow, Route("b", ALL), limit=2, max_bytes=10**6)
        await store.advance(slow, Progress(batch.scanned_to))
        assert await store.release() == 2
        stats = await store.stats()
        assert (stats.spool_events, stats.spool_bytes) == (2, 100)


# -- upkeep, replay ledger, schema --------------------------------------------------------


async def test_prune_forgets_only_released_events_past_the_window(backend: Backend) -> None:
    """Pruning drops old events every cursor passed; pending, dead and recent stay."""
    async with backend.opened() as store:
        old = T0 - WINDOW - 10
        for name in ("passed", "pending"):
            await store.ingest(new_event(name, received_at=old))
        await store.ingest(new_event("recent", received_at=T0))
        lease = await lease_on(store)
        batch = await store.read(lease, Route("a", ALL), limit=1, max_bytes=10**6)
        await store.advance(lease, Progress(batch.scanned_to))
        await store.release()
        await store.record_replay(ReplayRecord("wh", "d-old", None, old, "requested"))
        await store.record_replay(ReplayRecord("wh", "d-new", None, T0, "requested"))
        assert await store.prune(now=T0) == 1
        assert not await store.has_event("bighub", "passed")
        for kept in ("pending", "recent"):
            assert await store.has_event("bighub", kept)
        assert set(await store.replays_since("wh", 0)) == {"d-new"}
        assert await store.prune(now=T0) == 0


async def test_replay_ledger_records_and_replaces(backend: Backend) -> None:
    """Replays are kept per (webhook, delivery); a newer record replaces the older."""
    async with backend.opened() as store:
        await store.record_replay(ReplayRecord("wh1", "d1", None, T0 - 100, "requested"))
        await store.record_replay(ReplayRecord("wh1", "d2", "e2", T0, "requested"))
        await store.record_replay(ReplayRecord("wh2", "d1", None, T0, "requested"))
        await store.record_replay(ReplayRecord("wh1", "d1", "e1", T0 + 5, "failed: 500"))
        got = await store.replays_since("wh1", T0)
        assert got == {
            "d1": ReplayRecord("wh1", "d1", "e1", T0 + 5, "failed: 500"),
            "d2": ReplayRecord("wh1", "d2", "e2", T0, "requested"),
        }
        assert set(await store.replays_since("wh1", T0 + 1)) == {"d1"}


async def test_open_migrates_once_and_records_the_version(backend: Backend) -> None:
    """The first open creates the schema at the latest version; later opens find it."""
    async with backend.opened() as store:
        first = store.migrated
        assert first is not None
        assert first.before == 0
        assert first.after >= 2
        assert await store.writable()
    async with backend.opened() as store:
        assert store.migrated is not None
        assert store.migrated.before == store.migrated.after == first.after


async def test_schema_newer_than_release_is_refused(backend: Backend) -> None:
    """A database migrated by a newer release is not used with an older schema."""
    async with backend.opened():
        pass
    backend.set_schema_version(99)
    store = backend.make()
    with pytest.raises(StoreError, match="newer than this release"):
        await store.open()
    await store.close()


async def test_shared_flag_matches_the_backend(backend: Backend) -> None:
    """Only PostgreSQL is shared by several processes."""
    store = backend.make()
    assert store.shared is (backend.kind == "postgres")
    await store.close()


CLOSED_OPS: list[Callable[[Store], Any]] = [
    lambda s: s.ingest(new_event("e1")),
    lambda s: s.stats(),
]


@pytest.mark.parametrize("op", CLOSED_OPS, ids=["ingest", "stats"])
async def test_closed_store_raises_store_error(
    backend: Backend, op: Callable[[Store], Any]
) -> None:
    """Using a store that is not open is a StoreError (503), not a crash."""
    store = backend.make()
    with pytest.raises(StoreError):
        await op(store)


async def test_close_answers_every_waiting_ingest(backend: Backend) -> None:
    """Closing with ingests in flight answers each (stored or StoreError), none hangs."""
    store = backend.make()
    await store.open()
    calls = [asyncio.ensure_future(store.ingest(new_event(f"e{i}"))) for i in range(200)]
    for _ in range(3):  # let the calls queue up and a writer take them as a group
        await asyncio.sleep(0)
    await store.close()
    done, pending = await asyncio.wait(calls, timeout=10)
    assert not pending
    for call in done:
        assert call.exception() is None or isinstance(call.exception(), StoreError)
