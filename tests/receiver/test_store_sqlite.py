"""SQLite store specifics: durability settings, restart, pruning, quota and body release."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

from receiver.store import IngestOutcome, NewEvent, SQLiteStore

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


def test_body_released_when_every_sink_has_it_then_pruned(tmp_path: Path) -> None:
    """The body is dropped once all sinks delivered; the id is pruned after the window."""

    async def go() -> None:
        store = SQLiteStore(tmp_path / "s.db", dedup_window_seconds=100)
        await store.open()
        try:
            await store.ingest(EV)
            assert (await store.stats()).spool_events == 1
            a = await store.claim("a", limit=10, max_bytes=10**6, now=2000, lease_seconds=5)
            await store.mark_delivered([c.outbox_id for c in a])
            assert (await store.stats()).spool_events == 1  # sink b still needs it
            assert await store.prune(now=5000) == 0  # not prunable while b is pending
            b = await store.claim("b", limit=10, max_bytes=10**6, now=2000, lease_seconds=5)
            await store.mark_delivered([c.outbox_id for c in b])
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
            a = await store.claim("a", limit=10, max_bytes=10**6, now=2000, lease_seconds=5)
            await store.mark_dead([(a[0].outbox_id, "permanent: x")], now=2000)
            assert await store.prune(now=10**9) == 0
            assert (await store.stats()).spool_events == 1
            assert await store.requeue_dead(now=3000) == 1
            again = await store.claim("a", limit=10, max_bytes=10**6, now=3000, lease_seconds=5)
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


def test_leases_hide_rows_until_released(tmp_path: Path) -> None:
    """A leased row is not claimed again until the lease ends or leases are released."""

    async def go() -> None:
        store = SQLiteStore(tmp_path / "s.db")
        await store.open()
        try:
            await store.ingest(replace(EV, sinks=("a",)))
            now = time.time()
            assert (
                len(await store.claim("a", limit=5, max_bytes=10**6, now=now, lease_seconds=60))
                == 1
            )
            assert (
                await store.claim("a", limit=5, max_bytes=10**6, now=now + 1, lease_seconds=60)
                == []
            )
            assert (
                len(
                    await store.claim("a", limit=5, max_bytes=10**6, now=now + 61, lease_seconds=60)
                )
                == 1
            )
            await store.release_leases()
            assert (
                len(
                    await store.claim("a", limit=5, max_bytes=10**6, now=now + 62, lease_seconds=60)
                )
                == 1
            )
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


def test_quota_notices_space_freed_by_another_process(tmp_path: Path) -> None:
    """After a purge in another process (CLI), the server's next refusal recounts first."""

    async def go() -> None:
        server = SQLiteStore(tmp_path / "s.db", max_spool_events=1)
        await server.open()
        cli = SQLiteStore(tmp_path / "s.db")
        await cli.open()
        try:
            await server.ingest(replace(EV, sinks=("a",)))
            claimed = await server.claim("a", limit=5, max_bytes=10**6, now=2000, lease_seconds=5)
            await server.mark_dead([(claimed[0].outbox_id, "x")], now=2000)
            assert (await server.ingest(replace(EV, event_id="e2"))).outcome is IngestOutcome.QUOTA
            assert await cli.purge_dead() == 1
            server._recounted_at = 0.0  # the once-a-second limit, elapsed
            assert (
                await server.ingest(replace(EV, event_id="e2"))
            ).outcome is IngestOutcome.ACCEPTED
        finally:
            await cli.close()
            await server.close()

    run(go())


def test_group_commit_survives_an_unexpected_error(tmp_path: Path) -> None:
    """A non-SQLite error in one group fails that group (StoreError -> 503), not the writer."""
    import pytest

    from receiver.errors import StoreError

    async def go() -> None:
        store = SQLiteStore(tmp_path / "s.db")
        await store.open()
        try:
            broken = replace(EV, event_id="bad", body=None)  # type: ignore[arg-type]
            with pytest.raises(StoreError):
                await store.ingest(broken)
            assert (await store.ingest(EV)).outcome is IngestOutcome.ACCEPTED
            assert await store.writable() is True
        finally:
            await store.close()

    run(go())
