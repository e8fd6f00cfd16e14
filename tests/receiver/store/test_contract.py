"""The Store contract, the same tests for every backend (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from receiver.errors import StoreError
from receiver.settings import StoreSettings
from receiver.store import (
    IngestOutcome,
    NewEvent,
    ReplayRecord,
    RetryUpdate,
    Store,
    create_store,
)
from receiver.store.sqlite import sqlite_path
from tests.services.postgres import pg_schema, postgres_url

T0 = 1_800_000_000.0  # a fixed "now" for received_at, claims and leases
WINDOW = 3600  # dedup window used by these tests


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Backend:
    kind: str
    url: str

    def make(self, **settings: Any) -> Store:
        values: dict[str, Any] = {"url": self.url, "dedup_window_seconds": WINDOW, **settings}
        return create_store(StoreSettings(**values))

    @asynccontextmanager
    async def opened(self, **settings: Any) -> AsyncIterator[Store]:
        store = self.make(**settings)
        await store.open()
        try:
            yield store
        finally:
            await store.close()

    def set_schema_version(self, version: int) -> None:
        """Pretend a newer release migrated the database."""
        if self.kind == "sqlite":
            with sqlite3.connect(sqlite_path(self.url)) as db:
                db.execute(f"PRAGMA user_version={version}")
            return
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO schema_migrations (version, description) VALUES (%s, 'future')",
                (version,),
            )


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", f"sqlite:///{tmp_path / 'spool.db'}")
    return Backend("postgres", request.getfixturevalue("pg_schema"))


def new_event(
    event_id: str,
    *,
    sinks: tuple[str, ...] = ("a",),
    body: bytes | None = None,
    received_at: float = T0,
    source: str = "bighub",
) -> NewEvent:
    return NewEvent(
        source=source,
        event_id=event_id,
        id_origin="body",
        event_type="decision_event.created",
        category="decision",
        occurred_at="2026-11-24T08:00:00Z",
        received_at=received_at,
        delivery_id=f"dlv_{event_id}",
        body=body if body is not None else f'{{"event_id":"{event_id}"}}'.encode(),
        signature="v1=00",
        timestamp="1800000000",
        sinks=sinks,
    )


async def claim_all(store: Store, sink: str = "a", *, now: float = T0) -> list[int]:
    got = await store.claim(sink, limit=10_000, max_bytes=10**9, now=now, lease_seconds=60)
    return [c.outbox_id for c in got]


pytestmark = pytest.mark.anyio


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


async def test_dedup_survives_reopen(backend: Backend) -> None:
    """An event stored before a restart is still a duplicate after it."""
    async with backend.opened() as store:
        assert (await store.ingest(new_event("e1"))).outcome is IngestOutcome.ACCEPTED
    async with backend.opened() as store:
        assert (await store.ingest(new_event("e1"))).outcome is IngestOutcome.DUPLICATE
        assert len(await claim_all(store)) == 1


async def test_group_commit_keeps_every_concurrent_event(backend: Backend) -> None:
    """Many concurrent ingests are all durable, in fewer transactions than events."""
    async with backend.opened() as store:
        results = await asyncio.gather(*(store.ingest(new_event(f"e{i}")) for i in range(300)))
        assert all(r.outcome is IngestOutcome.ACCEPTED for r in results)
        assert len({r.seq for r in results}) == 300
        commits = (await store.stats()).ingest_commits
        assert 1 <= commits < 300
    async with backend.opened() as store:  # durable: visible to a fresh connection
        stats = await store.stats()
        assert stats.events_held == 300
        assert stats.sinks["a"].pending == 300


async def test_burst_of_large_bodies_is_split_into_groups(backend: Backend) -> None:
    """A burst bigger than one group's byte budget is stored whole, over several commits."""
    async with backend.opened() as store:
        body = b"{" + b" " * (1024**2 - 2) + b"}"
        results = await asyncio.gather(
            *(store.ingest(new_event(f"big{i}", body=body)) for i in range(40))
        )
        assert all(r.outcome is IngestOutcome.ACCEPTED for r in results)
        stats = await store.stats()
        assert (stats.spool_events, stats.spool_bytes) == (40, 40 * len(body))
        got = await store.claim("a", limit=100, max_bytes=10**9, now=T0, lease_seconds=60)
        assert {c.event.body for c in got} == {body}


async def test_concurrent_copies_of_one_event_accepted_once(backend: Backend) -> None:
    """Copies arriving together (one group or several) store the event once."""
    async with backend.opened() as store:
        results = await asyncio.gather(*(store.ingest(new_event("same")) for _ in range(40)))
        outcomes = [r.outcome for r in results]
        assert outcomes.count(IngestOutcome.ACCEPTED) == 1
        assert outcomes.count(IngestOutcome.DUPLICATE) == 39
        assert len(await claim_all(store)) == 1


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
        assert len(await claim_all(one)) == 800


async def test_unrouted_event_is_kept_for_dedup_only(backend: Backend) -> None:
    """An event no sink wants takes no spool but is still deduplicated."""
    async with backend.opened() as store:
        assert (await store.ingest(new_event("e1", sinks=()))).outcome is IngestOutcome.ACCEPTED
        stats = await store.stats()
        assert (stats.spool_events, stats.spool_bytes, stats.events_held) == (0, 0, 1)
        assert (await store.ingest(new_event("e1", sinks=()))).outcome is IngestOutcome.DUPLICATE


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


async def test_delivery_frees_quota(backend: Backend) -> None:
    """Once an event is delivered everywhere its room in the spool is free again."""
    async with backend.opened(max_spool_events=1) as store:
        await store.ingest(new_event("e1"))
        assert (await store.ingest(new_event("e2"))).outcome is IngestOutcome.QUOTA
        await store.mark_delivered(await claim_all(store))
        assert (await store.ingest(new_event("e2"))).outcome is IngestOutcome.ACCEPTED


# -- claims, leases and marks ---------------------------------------------------------------


async def test_claim_respects_limits_and_leases(backend: Backend) -> None:
    """Claims take the oldest due rows up to the limits and lease them."""
    async with backend.opened() as store:
        for i in range(5):
            await store.ingest(new_event(f"e{i}", body=b"y" * 100))
        first = await store.claim("a", limit=2, max_bytes=10**6, now=T0, lease_seconds=30)
        assert [c.event.event_id for c in first] == ["e0", "e1"]
        assert first[0].event.body == b"y" * 100
        assert first[0].attempts == 0
        by_bytes = await store.claim("a", limit=10, max_bytes=250, now=T0, lease_seconds=30)
        assert [c.event.event_id for c in by_bytes] == ["e2", "e3"]
        one_big = await store.claim("a", limit=10, max_bytes=1, now=T0, lease_seconds=30)
        assert [c.event.event_id for c in one_big] == ["e4"]  # the first row always goes
        assert await store.claim("a", limit=10, max_bytes=10**6, now=T0, lease_seconds=30) == []
        assert await store.claim("b", limit=10, max_bytes=10**6, now=T0, lease_seconds=30) == []
        summary = await store.pending_summary("a", now=T0, limit=100)
        assert summary.due == 0
        assert summary.next_due_at == pytest.approx(T0 + 30)


async def test_lease_expiry_lets_another_dispatcher_take_over(backend: Backend) -> None:
    """Leased rows are invisible until the lease ends, then claimable again."""
    async with backend.opened() as store:
        await store.ingest(new_event("e1"))
        taken = await store.claim("a", limit=10, max_bytes=10**6, now=T0, lease_seconds=10)
        assert await claim_all(store, now=T0 + 9) == []
        again = await store.claim("a", limit=10, max_bytes=10**6, now=T0 + 11, lease_seconds=10)
        assert [c.outbox_id for c in again] == [c.outbox_id for c in taken]


async def test_mark_delivered_ends_the_row(backend: Backend) -> None:
    """A delivered row is never claimed again, even after its lease."""
    async with backend.opened() as store:
        await store.ingest(new_event("e1"))
        await store.mark_delivered(await claim_all(store))
        assert await claim_all(store, now=T0 + 10_000) == []
        summary = await store.pending_summary("a", now=T0, limit=100)
        assert (summary.due, summary.next_due_at) == (0, None)


async def test_mark_retry_charges_an_attempt_or_not(backend: Backend) -> None:
    """A retry waits until its time; only a charged retry counts an attempt."""
    async with backend.opened() as store:
        await store.ingest(new_event("e1"))
        await store.ingest(new_event("e2"))
        ids = await claim_all(store)
        await store.mark_retry(
            [
                RetryUpdate(ids[0], T0 + 5, "boom"),
                RetryUpdate(ids[1], T0 + 5, "sink down", charge=False),
            ]
        )
        assert await claim_all(store, now=T0 + 4) == []
        summary = await store.pending_summary("a", now=T0 + 4, limit=100)
        assert summary.due == 0
        assert summary.next_due_at == pytest.approx(T0 + 5)
        assert (await store.pending_summary("a", now=T0 + 5, limit=100)).due == 2
        again = await store.claim("a", limit=10, max_bytes=10**6, now=T0 + 5, lease_seconds=60)
        assert {c.outbox_id: c.attempts for c in again} == {ids[0]: 1, ids[1]: 0}


async def test_pending_summary_reports_due_and_oldest(backend: Backend) -> None:
    """The summary counts due rows and names the oldest one's arrival."""
    async with backend.opened() as store:
        await store.ingest(new_event("e1", received_at=T0 - 50))
        await store.ingest(new_event("e2", received_at=T0 - 10))
        summary = await store.pending_summary("a", now=T0, limit=100)
        assert summary.due == 2
        assert summary.oldest_received_at == pytest.approx(T0 - 50)


async def test_mark_dead_and_dead_letter_admin(backend: Backend) -> None:
    """Dead letters are listed, paged, re-queued with a fresh count, or purged."""
    async with backend.opened() as store:
        for i in range(3):
            await store.ingest(new_event(f"e{i}", sinks=("a", "b")))
        ids = await claim_all(store)
        await store.mark_dead([(i, f"bad {n}") for n, i in enumerate(ids)], now=T0 + 1)
        dead = await store.dead_letters()
        assert [(d.sink, d.event_id, d.attempts, d.error) for d in dead] == [
            ("a", "e0", 1, "bad 0"),
            ("a", "e1", 1, "bad 1"),
            ("a", "e2", 1, "bad 2"),
        ]
        assert dead[0].dead_at == pytest.approx(T0 + 1)
        assert await store.dead_letters(sink="b") == []
        page = await store.dead_letters(limit=1, after_id=dead[0].outbox_id)
        assert [d.event_id for d in page] == ["e1"]
        stats = await store.stats()
        assert (stats.sinks["a"].dead, stats.sinks["a"].pending) == (3, 0)
        assert await store.requeue_dead(ids=[ids[0]], now=T0 + 2) == 1
        back = await store.claim("a", limit=10, max_bytes=10**6, now=T0 + 2, lease_seconds=60)
        assert [(c.outbox_id, c.attempts) for c in back] == [(ids[0], 0)]
        assert await store.purge_dead(sink="a") == 2
        assert [d.event_id for d in await store.dead_letters()] == []
        assert await store.requeue_dead(sink="a", now=T0) == 0


async def test_body_released_only_when_every_sink_has_it(backend: Backend) -> None:
    """The spool holds an event until its last sink delivered or purged it."""
    async with backend.opened() as store:
        await store.ingest(new_event("e1", sinks=("a", "b"), body=b"z" * 50))
        await store.ingest(new_event("e2", sinks=("a", "b"), body=b"z" * 70))
        await store.mark_delivered(await claim_all(store, "a"))
        stats = await store.stats()
        assert (stats.spool_events, stats.spool_bytes) == (2, 120)
        b_ids = await claim_all(store, "b")
        await store.mark_delivered(b_ids[:1])
        await store.mark_dead([(b_ids[1], "nope")], now=T0)
        stats = await store.stats()
        assert (stats.spool_events, stats.spool_bytes) == (1, 70)  # a dead letter keeps it
        await store.purge_dead(ids=[b_ids[1]])
        stats = await store.stats()
        assert (stats.spool_events, stats.spool_bytes, stats.events_held) == (0, 0, 2)
        assert (await store.ingest(new_event("e1"))).outcome is IngestOutcome.DUPLICATE


async def test_two_sinks_finishing_together_release_the_body(backend: Backend) -> None:
    """Two dispatchers marking the last two sinks of events at once free every body."""
    async with backend.opened() as one, backend.opened() as two:
        for i in range(60):
            await one.ingest(new_event(f"e{i}", sinks=("a", "b")))
        a_ids, b_ids = await claim_all(one, "a"), await claim_all(two, "b")
        await asyncio.gather(
            *(one.mark_delivered([i]) for i in a_ids), *(two.mark_delivered([i]) for i in b_ids)
        )
        stats = await one.stats()
        assert (stats.spool_events, stats.spool_bytes) == (0, 0)


async def test_concurrent_claimers_never_share_a_row(backend: Backend) -> None:
    """Two stores claiming at once from one database get disjoint rows, all of them."""
    async with backend.opened() as one, backend.opened() as two:
        await asyncio.gather(*(one.ingest(new_event(f"e{i}")) for i in range(400)))

        async def drain(store: Store) -> list[int]:
            got: list[int] = []
            while True:
                batch = await store.claim("a", limit=7, max_bytes=10**6, now=T0, lease_seconds=60)
                if not batch:
                    return got
                got.extend(c.outbox_id for c in batch)

        claimers = [drain(one), drain(two), drain(one), drain(two)]
        results = await asyncio.gather(*claimers)
        everything = [i for r in results for i in r]
        assert len(everything) == len(set(everything)) == 400


# -- upkeep, replay ledger, schema --------------------------------------------------------


async def test_prune_forgets_only_delivered_events_past_the_window(backend: Backend) -> None:
    """Pruning drops fully delivered old ids and keeps pending, dead and recent ones."""
    async with backend.opened() as store:
        old = T0 - WINDOW - 10
        for name in ("delivered", "pending", "dead"):
            await store.ingest(new_event(name, received_at=old))
        await store.ingest(new_event("recent", received_at=T0))
        ids = await claim_all(store)
        await store.mark_delivered([ids[0], ids[3]])
        await store.mark_dead([(ids[2], "x")], now=T0)
        await store.record_replay(ReplayRecord("wh", "d-old", None, old, "requested"))
        await store.record_replay(ReplayRecord("wh", "d-new", None, T0, "requested"))
        assert await store.prune(now=T0) == 1
        assert not await store.has_event("bighub", "delivered")
        for kept in ("pending", "dead", "recent"):
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
        assert first.after >= 1
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
    """Only PostgreSQL is shared by several processes (and keeps leases at start)."""
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


async def test_dead_letter_pending_of_a_removed_sink(backend: Backend) -> None:
    """Pending rows of one sink move to the dead letters with the reason; others stay."""
    async with backend.opened() as store:
        await store.ingest(new_event("e1"))
        moved = await store.dead_letter_pending("a", "sink 'a' is not configured", now=T0)
        assert moved == 1
        dead = await store.dead_letters(sink="a")
        assert [(d.event_id, d.error) for d in dead] == [("e1", "sink 'a' is not configured")]
        assert await store.dead_letter_pending("a", "again", now=T0) == 0
        assert await store.requeue_dead(sink="a", now=T0) == 1
