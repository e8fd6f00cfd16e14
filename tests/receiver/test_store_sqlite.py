"""SQLite store specifics: durability settings, restart, pruning, quota, body release, leases."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from pathlib import Path

from receiver.store import DeadEvent, IngestOutcome, NewEvent, Progress, Route, SQLiteStore
from tests.receiver.store.backends import ALL, drain, lease_on

EV = NewEvent(
    source="bighub",
    event_id="e1",
    id_origin="body.event_id",
    event_type="rule.x",
    category="rule",
    occurred_at=None,
    received_at=1000.0,
    delivery_id=None,
    body=b'{"type":"rule.x"}',
    signature="v1=s",
    timestamp="1000",
    sinks=("a", "b"),
)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_wal_and_full_sync(tmp_path: Path) -> None:
    """Ingest commits run in WAL mode with synchronous=FULL (fsync before the 2xx)."""

    async def go() -> tuple[str, int]:
        store = SQLiteStore(tmp_path / "s.db")
        await store.open()
        try:
            await store.ingest(EV)
            db = store._write_db
            assert db is not None
            mode = db.execute("PRAGMA journal_mode").fetchone()[0]
            sync = db.execute("PRAGMA synchronous").fetchone()[0]
            return mode, sync
        finally:
            await store.close()

    assert run(go()) == ("wal", 2)


def test_dedup_survives_restart(tmp_path: Path) -> None:
    """An id accepted before a restart is a duplicate after it."""

    async def ingest() -> IngestOutcome:
        store = SQLiteStore(tmp_path / "s.db")
        await store.open()
        try:
            return (await store.ingest(EV)).outcome
        finally:
            await store.close()

    assert run(ingest()) is IngestOutcome.ACCEPTED
    assert run(ingest()) is IngestOutcome.DUPLICATE


def test_body_released_when_every_cursor_passed_it_then_pruned(tmp_path: Path) -> None:
    """The body is dropped once every cursor passed it; the id is pruned after the window."""

    async def go() -> None:
        store = SQLiteStore(tmp_path / "s.db", dedup_window_seconds=100)
        await store.open()
        try:
            await store.ensure_cursors([Route("a", ALL), Route("b", ALL)])
            await store.ingest(EV)
            assert (await store.stats()).spool_events == 1
            assert await drain(store, "a") == ["e1"]
            await store.release()
            assert (await store.stats()).spool_events == 1  # sink b still needs it
            assert await store.prune(now=5000) == 0  # not prunable while b has it to do
            assert await drain(store, "b") == ["e1"]
            await store.release()
            stats = await store.stats()
            assert (stats.spool_events, stats.spool_bytes, stats.events_held) == (0, 0, 1)
            assert await store.prune(now=1050) == 0  # inside the window: still deduplicated
            assert (await store.ingest(EV)).outcome is IngestOutcome.DUPLICATE
            assert await store.prune(now=1101) == 1
            assert (
                await store.ingest(replace(EV, received_at=1200))
            ).outcome is IngestOutcome.ACCEPTED
        finally:
            await store.close()

    run(go())


def test_dead_letters_keep_the_event(tmp_path: Path) -> None:
    """Dead letters keep the body (re-queueable) and are never pruned."""

    async def go() -> None:
        store = SQLiteStore(tmp_path / "s.db", dedup_window_seconds=100)
        await store.open()
        try:
            await store.ingest(replace(EV, sinks=("a",)))
            lease = await lease_on(store)
            batch = await store.read(lease, Route("a", ALL), limit=10, max_bytes=10**6)
            dead = DeadEvent(batch.events[0].seq, batch.positions[0], 1, "permanent: x")
            await store.advance(lease, Progress(batch.scanned_to, dead=(dead,)))
            await store.release()
            assert await store.prune(now=10**9) == 0
            stats = await store.stats()
            assert (stats.spool_events, stats.dead_events, stats.dead_bytes) == (0, 1, len(EV.body))
            assert await store.requeue_dead(now=3000) == 1
            again = await store.requeued("a", now=3000, limit=10, max_bytes=10**6)
            assert again[0].event.body == EV.body
            assert again[0].attempts == 0
        finally:
            await store.close()

    run(go())


def test_quota_refuses_new_but_answers_duplicates(tmp_path: Path) -> None:
    """Over quota: new events get QUOTA (nothing stored), held ones still DUPLICATE."""

    async def go() -> None:
        store = SQLiteStore(tmp_path / "s.db", max_spool_events=1)
        await store.open()
        try:
            assert (await store.ingest(EV)).outcome is IngestOutcome.ACCEPTED
            assert (await store.ingest(replace(EV, event_id="e2"))).outcome is IngestOutcome.QUOTA
            assert (await store.ingest(EV)).outcome is IngestOutcome.DUPLICATE
            assert (await store.stats()).events_held == 1
            assert not await store.has_event("bighub", "e2")
        finally:
            await store.close()

    run(go())


def test_the_owning_process_clears_leases_left_by_a_crash(tmp_path: Path) -> None:
    """serve owns the file: at open it drops leases a killed predecessor still held."""

    async def go() -> None:
        crashed = SQLiteStore(tmp_path / "s.db")
        await crashed.open()
        assert await crashed.acquire("a", "crashed", lease_seconds=3600) is not None
        await crashed.close()
        store = SQLiteStore(tmp_path / "s.db", exclusive=True)
        await store.open()
        try:
            assert await store.acquire("a", "next", lease_seconds=60) is not None
        finally:
            await store.close()

    run(go())


def test_newer_schema_refused(tmp_path: Path) -> None:
    """A spool written by a newer release is refused, not silently reused."""
    db = sqlite3.connect(tmp_path / "s.db")
    db.execute("PRAGMA user_version=99")
    db.close()

    async def go() -> None:
        store = SQLiteStore(tmp_path / "s.db")
        try:
            await store.open()
        finally:
            await store.close()

    import pytest

    from receiver.errors import StoreError

    with pytest.raises(StoreError, match="newer"):
        run(go())


def _ingest_together(path: Path, first: list[str], ids: list[str]):  # type: ignore[no-untyped-def]
    """Ingest ``first`` one by one, then ``ids`` at once (one group commit); the results
    of ``ids`` and every stored event id's seq."""

    async def go():  # type: ignore[no-untyped-def]
        store = SQLiteStore(path)
        await store.open()
        try:
            for event_id in first:
                await store.ingest(replace(EV, event_id=event_id))
            results = await asyncio.gather(*(store.ingest(replace(EV, event_id=i)) for i in ids))
            db = store._write_db
            assert db is not None
            return results, dict(db.execute("SELECT event_id, seq FROM events").fetchall())
        finally:
            await store.close()

    return run(go())


def test_a_group_mixing_held_and_new_events_gets_the_seqs_it_wrote(tmp_path: Path) -> None:
    """In one group commit, held ids are duplicates and each new id gets its own row's seq."""
    results, rows = _ingest_together(tmp_path / "s.db", ["e1"], ["n1", "e1", "n2", "n2", "n3"])
    assert [r.outcome for r in results] == [
        IngestOutcome.ACCEPTED,
        IngestOutcome.DUPLICATE,
        IngestOutcome.ACCEPTED,
        IngestOutcome.DUPLICATE,  # the second copy within the group
        IngestOutcome.ACCEPTED,
    ]
    assert [results[i].seq for i in (0, 2, 4)] == [rows["n1"], rows["n2"], rows["n3"]]
    assert sorted(rows.values()) == list(range(1, 5))  # no seq used up by the held id


def test_an_all_new_group_gets_consecutive_seqs_in_arrival_order(tmp_path: Path) -> None:
    """Without RETURNING the seqs come from lastrowid: they match the rows, in order."""
    ids = [f"a{i}" for i in range(30)]
    results, rows = _ingest_together(tmp_path / "s.db", [], ids)
    assert [r.seq for r in results] == [rows[i] for i in ids] == list(range(1, 31))
