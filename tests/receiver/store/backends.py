"""Both store backends behind one fixture, and helpers that drive a cursor directly."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from receiver.settings import StoreSettings
from receiver.store import Lease, NewEvent, Progress, Route, Store, create_store
from receiver.store.sqlite import sqlite_path

T0 = 1_800_000_000.0  # a fixed "now" for received_at
WINDOW = 3600  # dedup window used by these tests
ALL = ("*",)


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

    def sql(self, statement: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on the database directly (as another client would)."""
        if self.kind == "sqlite":
            with sqlite3.connect(sqlite_path(self.url)) as db:
                return list(db.execute(statement.replace("%s", "?"), args).fetchall())
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(statement, args)  # type: ignore[arg-type]
            return list(cur.fetchall()) if cur.description else []

    def set_schema_version(self, version: int) -> None:
        """Pretend a newer release migrated the database."""
        if self.kind == "sqlite":
            with sqlite3.connect(sqlite_path(self.url)) as db:
                db.execute(f"PRAGMA user_version={version}")
            return
        self.sql(
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
    event_type: str = "decision_event.created",
) -> NewEvent:
    return NewEvent(
        source=source,
        event_id=event_id,
        id_origin="body",
        event_type=event_type,
        category=event_type.split(".", 1)[0],
        occurred_at="2026-11-24T08:00:00Z",
        received_at=received_at,
        delivery_id=f"dlv_{event_id}",
        body=body if body is not None else f'{{"event_id":"{event_id}"}}'.encode(),
        signature="v1=00",
        timestamp="1800000000",
        sinks=sinks,
    )


async def lease_on(store: Store, sink: str = "a", owner: str = "tester") -> Lease:
    lease = await store.acquire(sink, owner, lease_seconds=60)
    assert lease is not None
    return lease


async def drain(
    store: Store, sink: str = "a", patterns: tuple[str, ...] = ALL, limit: int = 10_000
) -> list[str]:
    """Read and confirm everything after the sink's cursor; the event ids in order."""
    lease = await lease_on(store, sink)
    got: list[str] = []
    while True:
        batch = await store.read(lease, Route(sink, patterns), limit=limit, max_bytes=10**9)
        got += [e.event_id for e in batch.events]
        lease = await store.advance(lease, Progress(batch.scanned_to))
        if not batch.more:
            await store.release_lease(lease)
            return got
