"""Versioned migrations: the shared rules, SQLite compatibility, concurrent PostgreSQL starts."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from urllib.parse import unquote

import pytest

from receiver.errors import StoreError
from receiver.settings import StoreSettings
from receiver.store import IngestOutcome, Store, create_store
from receiver.store._migrations import Migration, pending
from tests.receiver.store.backends import drain, new_event
from tests.services.postgres import pg_schema, postgres_url

STEPS = (Migration(1, "one", "-- 1"), Migration(2, "two", "-- 2"), Migration(3, "three", "-- 3"))


def test_pending_lists_what_is_missing_in_order() -> None:
    """From version n, the migrations n+1.. are due, in number order."""
    assert [m.version for m in pending(STEPS, 0, backend="x")] == [1, 2, 3]
    assert [m.version for m in pending(STEPS, 2, backend="x")] == [3]
    assert pending(STEPS, 3, backend="x") == []


def test_pending_refuses_a_newer_database() -> None:
    """A database at a version this release does not know is refused."""
    with pytest.raises(StoreError, match="version 4 is newer than this release knows"):
        pending(STEPS, 4, backend="x")


def test_pending_rejects_gaps_in_numbering() -> None:
    """Migrations must be numbered 1..n with no gap or repeat."""
    with pytest.raises(ValueError, match=r"numbered 1\.\.n"):
        pending((STEPS[0], STEPS[2]), 0, backend="x")


FIXTURES = Path(__file__).with_name("fixtures")
# What the 0.1.0 spools in fixtures/ hold (see the comment at the top of each file):
# alpha still had e6, e7, e8 to deliver (e5 it had already, out of order), e4 dead;
# beta still had e2..e8, and e1 dead then re-queued by an operator; e9 routed nowhere.
STILL_DUE = {"alpha": ["e6", "e7", "e8"], "beta": ["e2", "e3", "e4", "e5", "e6", "e7", "e8"]}
DEAD = [("alpha", "e4", "permanent: too large", "dead")]
REQUEUED = [("beta", "e1", "requeued")]


async def _check_migrated_spool(store: Store) -> None:
    assert store.migrated is not None
    assert (store.migrated.before, store.migrated.after) == (1, 2)
    for sink, due in STILL_DUE.items():
        assert await drain(store, sink) == due
    dead = await store.dead_letters()
    assert [(d.sink, d.event_id, d.error, d.state) for d in dead] == DEAD
    # A re-queued dead letter stays one: it goes out beside the log, with its age counted
    # from the re-queue, not as the head of beta's queue.
    requeued = await store.dead_letters(state="requeued")
    assert [(d.sink, d.event_id, d.state) for d in requeued] == REQUEUED
    due = await store.requeued("beta", now=2_000_000_000, limit=10, max_bytes=10**6)
    assert [(r.event.event_id, r.requeued_at) for r in due] == [("e1", 1790000200.0)]
    for i in range(10):  # dedup still knows every event
        assert (await store.ingest(new_event(f"e{i}"))).outcome is IngestOutcome.DUPLICATE
    await store.release()
    stats = await store.stats()
    assert (stats.spool_events, stats.dead_events) == (0, 2)  # e4 dead, e1 re-queued


def test_sqlite_spool_of_the_outbox_release_is_migrated_and_delivers(tmp_path: Path) -> None:
    """A spool written by 0.1.0 (outbox rows) opens as a log with cursors: each sink
    gets exactly what it still had to deliver, dead letters stay, dedup holds."""
    path = tmp_path / "spool.db"
    with sqlite3.connect(path) as db:
        db.executescript((FIXTURES / "spool_v1.sqlite.sql").read_text())

    async def run() -> None:
        store = create_store(StoreSettings(url=f"sqlite:///{path}"))
        await store.open()
        try:
            await _check_migrated_spool(store)
        finally:
            await store.close()

    asyncio.run(run())


def test_postgres_store_of_the_outbox_release_is_migrated_and_delivers(pg_schema: str) -> None:
    """The same for a PostgreSQL store written by 0.1.0."""
    import psycopg

    schema = unquote(pg_schema.split("search_path%3D", 1)[1])
    script = (FIXTURES / "spool_v1.postgres.sql").read_text().replace("v1fix.", f"{schema}.")
    with psycopg.connect(pg_schema, autocommit=True) as conn:
        conn.execute(script)  # type: ignore[call-overload]

    async def run() -> None:
        store = create_store(StoreSettings(url=pg_schema))
        await store.open()
        try:
            await _check_migrated_spool(store)
        finally:
            await store.close()

    asyncio.run(run())


def test_postgres_replicas_starting_together_migrate_once(pg_schema: str) -> None:
    """Several processes opening an empty schema at once: one creates it, all start."""

    async def run() -> list[tuple[int, int]]:
        stores = [create_store(StoreSettings(url=pg_schema, pool_max_size=2)) for _ in range(4)]
        try:
            await asyncio.gather(*(s.open() for s in stores))
            return [(s.migrated.before, s.migrated.after) for s in stores if s.migrated]
        finally:
            await asyncio.gather(*(s.close() for s in stores))

    versions = asyncio.run(run())
    assert sorted(versions) == [(0, 2), (2, 2), (2, 2), (2, 2)]
