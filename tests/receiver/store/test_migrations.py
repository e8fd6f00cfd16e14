"""Versioned migrations: the shared rules, SQLite compatibility, concurrent PostgreSQL starts."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from receiver.errors import StoreError
from receiver.settings import StoreSettings
from receiver.store import IngestOutcome, create_store
from receiver.store._migrations import Migration, pending
from receiver.store.sqlite import _SCHEMA
from tests.receiver.store.test_contract import new_event
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


def test_sqlite_file_from_before_numbered_migrations_opens_unchanged(tmp_path: Path) -> None:
    """A spool written by the release before (user_version 1) keeps its events."""
    path = tmp_path / "spool.db"
    with sqlite3.connect(path) as db:
        db.executescript(_SCHEMA)
        db.execute("PRAGMA user_version=1")
        db.execute(
            "INSERT INTO events (source, event_id, id_origin, event_type, category,"
            " received_at, size, body) VALUES ('bighub', 'old', 'body', 't', 'other', 1, 2, x'7b7d')"
        )

    async def run() -> None:
        store = create_store(StoreSettings(url=f"sqlite:///{path}"))
        await store.open()
        try:
            assert store.migrated is not None
            assert (store.migrated.before, store.migrated.after) == (1, 1)
            assert (await store.ingest(new_event("old"))).outcome is IngestOutcome.DUPLICATE
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
    assert sorted(versions) == [(0, 1), (1, 1), (1, 1), (1, 1)]
