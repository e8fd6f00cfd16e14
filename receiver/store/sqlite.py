"""The embedded store: one SQLite file in WAL mode.

All writes go through one connection on one thread, so writers never wait on
SQLite's file lock (whose busy handler sleeps in coarse steps); reads (summaries,
listings, metrics) use a second connection on its own thread, which WAL lets run
beside a write.

- ingest commits run with ``synchronous=FULL``: a commit returns only after the WAL
  is fsynced, and only then does the HTTP answer go out. Requests that arrive while
  a commit is in flight are queued and committed together in the next transaction
  (group commit), so one fsync serves many requests.
- dispatch bookkeeping (claims, delivery marks) runs with ``synchronous=NORMAL``:
  losing a delivery mark in a power cut means the event is sent again, which
  at-least-once delivery allows; it never loses an event.

One ``serve`` process owns a file at a time (an exclusive lock file enforces it);
CLI commands such as ``dead-letters`` share it through SQLite's own locking.

The schema version is ``PRAGMA user_version`` (see ``_migrations``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from receiver.errors import StoreError
from receiver.store import _migrations
from receiver.store.base import (
    Claimed,
    DeadLetter,
    IngestOutcome,
    IngestResult,
    NewEvent,
    PendingSummary,
    ReplayRecord,
    RetryUpdate,
    SchemaVersion,
    SinkStats,
    StoreStats,
    event_from_row,
)

__all__ = ["SQLiteStore", "sqlite_path"]

T = TypeVar("T")
_GROUP_MAX = 2000  # events per group commit; bounds one transaction's latency

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    source       TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    id_origin    TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    category     TEXT NOT NULL,
    occurred_at  TEXT,
    received_at  REAL NOT NULL,
    delivery_id  TEXT,
    signature    TEXT,
    ts_header    TEXT,
    size         INTEGER NOT NULL,
    body         BLOB,            -- NULL once every sink has it: only the id is kept
    UNIQUE (source, event_id)
);
CREATE INDEX IF NOT EXISTS events_received ON events (received_at) WHERE body IS NULL;
-- The reconciler asks "is this delivery held?" for deliveries that carry no event id.
CREATE INDEX IF NOT EXISTS events_delivery ON events (source, delivery_id)
    WHERE delivery_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq       INTEGER NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    sink            TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',  -- pending | delivered | dead
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    lease_until     REAL NOT NULL DEFAULT 0,
    last_error      TEXT,
    dead_at         REAL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (sink, state, id);
CREATE INDEX IF NOT EXISTS outbox_event ON outbox (event_seq);
CREATE TABLE IF NOT EXISTS replays (
    webhook_id   TEXT NOT NULL,
    delivery_id  TEXT NOT NULL,
    event_id     TEXT,
    requested_at REAL NOT NULL,
    outcome      TEXT NOT NULL,
    PRIMARY KEY (webhook_id, delivery_id)
);
"""

# Version 1 is the baseline above. It is idempotent (IF NOT EXISTS) and re-applied at
# every open, as before migrations were numbered, so files already at user_version 1
# pick up additive IF NOT EXISTS changes to it; anything else gets a new number here.
MIGRATIONS: tuple[_migrations.Migration, ...] = (
    _migrations.Migration(1, "baseline: events, outbox, replays", _SCHEMA),
)
SCHEMA_VERSION = len(MIGRATIONS)

_EVENT_COLS = (
    "e.seq, e.event_id, e.id_origin, e.event_type, e.category, e.occurred_at, "
    "e.received_at, e.source, e.delivery_id, e.body, e.signature, e.ts_header"
)


def sqlite_path(url: str) -> Path:
    """``sqlite:///rel/path`` -> ``rel/path``; ``sqlite:////abs/path`` -> ``/abs/path``."""
    if not url.startswith("sqlite:///"):
        raise ValueError("not a sqlite:/// URL")
    return Path(url[len("sqlite:///") :])


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _apply(db: sqlite3.Connection, script: str, version: int) -> None:
    # user_version lives in the database header, which SQLite journals like any
    # page: the script and its version number commit together or not at all.
    try:
        db.executescript(
            f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version={int(version)};\nCOMMIT;"
        )
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


class SQLiteStore:
    """The default store. See the module docstring for its durability rules."""

    shared: bool = False  # one serve process owns the file

    def __init__(
        self,
        path: Path,
        *,
        dedup_window_seconds: float = 7 * 86400,
        max_spool_bytes: int = 1024**3,
        max_spool_events: int = 1_000_000,
        exclusive: bool = False,
    ) -> None:
        self.path = path
        self.dedup_window_seconds = dedup_window_seconds
        self.max_spool_bytes = max_spool_bytes
        self.max_spool_events = max_spool_events
        self._exclusive = exclusive
        self._lock_fd: int | None = None
        self._write_pool = ThreadPoolExecutor(1, thread_name_prefix="sqlite-write")
        self._read_pool = ThreadPoolExecutor(1, thread_name_prefix="sqlite-read")
        self._write_db: sqlite3.Connection | None = None
        self._read_db: sqlite3.Connection | None = None
        self._queue: list[tuple[NewEvent, asyncio.Future[IngestResult]]] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._spool_lock = threading.Lock()
        self._spool_bytes = 0
        self._spool_events = 0
        self._commits = 0
        self._recounted_at = 0.0
        self.migrated: SchemaVersion | None = None

    # -- plumbing ---------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=30000")
        return db

    async def _on(self, pool: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pool, fn)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc

    async def _work(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a bookkeeping write on the writer thread (synchronous=NORMAL)."""
        db = self._write_db
        if db is None:
            raise StoreError("store is not open")

        def run() -> T:
            db.execute("PRAGMA synchronous=NORMAL")
            return fn(db)

        return await self._on(self._write_pool, run)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        db = self._read_db
        if db is None:
            raise StoreError("store is not open")
        return await self._on(self._read_pool, lambda: fn(db))

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._exclusive:
            self._take_lock()
        self._write_db = await self._on(self._write_pool, self._connect)
        self.migrated = await self._work(self._migrate)
        self._read_db = await self._on(self._read_pool, self._connect)
        await self._refresh_spool()
        self._writer = asyncio.create_task(self._write_loop(), name="sqlite-group-commit")

    def _take_lock(self) -> None:
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StoreError(f"{self.path} is in use by another serve process") from None
        self._lock_fd = fd

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> SchemaVersion:
        before = int(db.execute("PRAGMA user_version").fetchone()[0])
        todo = _migrations.pending(MIGRATIONS, before, backend="sqlite")
        _apply(db, _SCHEMA, max(before, 1))
        for m in todo:
            if m.version > 1:
                _apply(db, m.sql, m.version)
        return SchemaVersion(before, SCHEMA_VERSION)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        for _, fut in self._queue:
            if not fut.done():
                fut.set_exception(StoreError("store closed"))
        self._queue.clear()
        for db, pool in ((self._write_db, self._write_pool), (self._read_db, self._read_pool)):
            if db is not None:
                await asyncio.get_running_loop().run_in_executor(pool, db.close)
        self._write_db = self._read_db = None
        self._write_pool.shutdown(wait=True)
        self._read_pool.shutdown(wait=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- ingest (group commit) ----------------------------------------------------

    async def ingest(self, event: NewEvent) -> IngestResult:
        if self._writer is None or self._writer.done():
            raise StoreError("store is not open")
        fut: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        self._queue.append((event, fut))
        self._wakeup.set()
        return await fut

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch, self._queue = self._queue[:_GROUP_MAX], self._queue[_GROUP_MAX:]
                items = [item for item, _ in batch]
                try:
                    results = await self._on(self._write_pool, partial(self._commit, items))
                except asyncio.CancelledError:  # closing: nobody may wait for this group forever
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(StoreError("store closed during the commit"))
                    raise
                except Exception as exc:  # the group fails (503), the writer lives on
                    error = exc if isinstance(exc, StoreError) else StoreError(repr(exc))
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(error)
                    continue
                for (_, fut), result in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(result)

    def _commit(self, items: Sequence[NewEvent]) -> list[IngestResult]:
        db = self._write_db
        if db is None:
            raise sqlite3.OperationalError("store is not open")
        db.execute("PRAGMA synchronous=FULL")  # this commit is what the 2xx promises
        results: list[IngestResult] = []
        with self._spool_lock:
            spool_bytes, spool_events = self._spool_bytes, self._spool_events
        added_bytes = added_events = 0
        db.execute("BEGIN IMMEDIATE")
        try:
            for ev in items:
                over = (
                    spool_bytes + added_bytes + len(ev.body) > self.max_spool_bytes
                    or spool_events + added_events + 1 > self.max_spool_events
                )
                if over and time.monotonic() - self._recounted_at >= 1.0:
                    # Space may have been freed by another process (a CLI purge): look
                    # again before refusing, at most once a second.
                    self._recounted_at = time.monotonic()
                    total_bytes, total_events = self._spool_totals(db)
                    # The count includes this transaction's own inserts, added again below.
                    spool_bytes = total_bytes - added_bytes
                    spool_events = total_events - added_events
                    with self._spool_lock:
                        self._spool_bytes, self._spool_events = spool_bytes, spool_events
                    over = (
                        spool_bytes + added_bytes + len(ev.body) > self.max_spool_bytes
                        or spool_events + added_events + 1 > self.max_spool_events
                    )
                if over:
                    held = db.execute(
                        "SELECT 1 FROM events WHERE source=? AND event_id=?",
                        (ev.source, ev.event_id),
                    ).fetchone()
                    results.append(
                        IngestResult(IngestOutcome.DUPLICATE if held else IngestOutcome.QUOTA)
                    )
                    continue
                row = db.execute(
                    "INSERT INTO events (source, event_id, id_origin, event_type, category,"
                    " occurred_at, received_at, delivery_id, signature, ts_header, size, body)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
                    " ON CONFLICT (source, event_id) DO NOTHING RETURNING seq",
                    (
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
                    ),
                ).fetchone()
                if row is None:
                    results.append(IngestResult(IngestOutcome.DUPLICATE))
                    continue
                seq = int(row[0])
                if ev.sinks:
                    db.executemany(
                        "INSERT INTO outbox (event_seq, sink) VALUES (?, ?)",
                        [(seq, sink) for sink in ev.sinks],
                    )
                    added_bytes += len(ev.body)
                    added_events += 1
                else:
                    # Routed nowhere: keep only the id for dedup.
                    db.execute("UPDATE events SET body = NULL WHERE seq = ?", (seq,))
                results.append(IngestResult(IngestOutcome.ACCEPTED, seq))
            db.execute("COMMIT")  # synchronous=FULL: returns after the WAL fsync
        except BaseException:
            db.execute("ROLLBACK")
            raise
        with self._spool_lock:
            self._spool_bytes += added_bytes
            self._spool_events += added_events
            self._commits += 1
        return results

    # -- dispatch -----------------------------------------------------------------

    async def claim(
        self, sink: str, *, limit: int, max_bytes: int, now: float, lease_seconds: float
    ) -> list[Claimed]:
        def run(db: sqlite3.Connection) -> list[Claimed]:
            db.execute("BEGIN IMMEDIATE")
            try:
                rows = db.execute(
                    f"SELECT o.id, o.attempts, {_EVENT_COLS}, o.dead_at FROM outbox o"
                    " JOIN events e ON e.seq = o.event_seq"
                    " WHERE o.sink = ? AND o.state = 'pending'"
                    " AND o.next_attempt_at <= ? AND o.lease_until <= ?"
                    " ORDER BY o.id LIMIT ?",
                    (sink, now, now, limit),
                ).fetchall()
                taken: list[Claimed] = []
                size = 0
                for row in rows:
                    size += len(row[11])
                    if taken and size > max_bytes:
                        break
                    # dead_at on a pending row is the time it was re-queued.
                    taken.append(Claimed(row[0], row[1], event_from_row(row[2:14]), row[14]))
                if taken:
                    ids = [c.outbox_id for c in taken]
                    db.execute(
                        f"UPDATE outbox SET lease_until = ? WHERE id IN ({_marks(len(ids))})",
                        (now + lease_seconds, *ids),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return taken

        return await self._work(run)

    async def pending_summary(self, sink: str, *, now: float, limit: int) -> PendingSummary:
        def run(db: sqlite3.Connection) -> PendingSummary:
            # Bounded: a backlog of millions must not make every dispatcher wake-up O(n).
            (due,) = db.execute(
                "SELECT count(*) FROM (SELECT 1 FROM outbox WHERE sink = ? AND state = 'pending'"
                " AND next_attempt_at <= ? AND lease_until <= ? ORDER BY id LIMIT ?)",
                (sink, now, now, limit),
            ).fetchone()
            if due:
                (oldest,) = db.execute(
                    "SELECT e.received_at FROM outbox o JOIN events e ON e.seq = o.event_seq"
                    " WHERE o.sink = ? AND o.state = 'pending' AND o.next_attempt_at <= ?"
                    " AND o.lease_until <= ? ORDER BY o.id LIMIT 1",
                    (sink, now, now),
                ).fetchone()
                return PendingSummary(int(due), oldest, now)
            (next_due,) = db.execute(
                "SELECT min(max(next_attempt_at, lease_until)) FROM outbox"
                " WHERE sink = ? AND state = 'pending'",
                (sink,),
            ).fetchone()
            return PendingSummary(0, None, next_due)

        return await self._read(run)

    def _release_bodies(self, db: sqlite3.Connection, outbox_ids: Sequence[int]) -> tuple[int, int]:
        """Drop bodies no sink needs any more; return (bytes, events) freed.

        The caller subtracts them from the quota counters only after its commit.
        """
        freed = db.execute(
            "UPDATE events SET body = NULL WHERE body IS NOT NULL AND seq IN"
            f" (SELECT event_seq FROM outbox WHERE id IN ({_marks(len(outbox_ids))}))"
            " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_seq = events.seq"
            " AND o.state != 'delivered') RETURNING size",
            tuple(outbox_ids),
        ).fetchall()
        return sum(r[0] for r in freed), len(freed)

    def _uncount(self, freed: tuple[int, int]) -> None:
        with self._spool_lock:
            self._spool_bytes -= freed[0]
            self._spool_events -= freed[1]

    async def mark_delivered(self, outbox_ids: Sequence[int]) -> None:
        if not outbox_ids:
            return

        def run(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.execute(
                    "UPDATE outbox SET state = 'delivered', lease_until = 0, last_error = NULL"
                    f" WHERE id IN ({_marks(len(outbox_ids))})",
                    tuple(outbox_ids),
                )
                freed = self._release_bodies(db, outbox_ids)
            self._uncount(freed)  # after the commit: a failed one leaves the counters right

        await self._work(run)

    async def mark_retry(self, updates: Sequence[RetryUpdate]) -> None:
        def run(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.executemany(
                    "UPDATE outbox SET attempts = attempts + ?, next_attempt_at = ?,"
                    " lease_until = 0, last_error = ? WHERE id = ? AND state = 'pending'",
                    [
                        (int(u.charge), u.next_attempt_at, u.error[:500], u.outbox_id)
                        for u in updates
                    ],
                )

        if updates:
            await self._work(run)

    async def mark_dead(self, failures: Sequence[tuple[int, str]], *, now: float) -> None:
        def run(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.executemany(
                    "UPDATE outbox SET state = 'dead', attempts = attempts + 1, lease_until = 0,"
                    " last_error = ?, dead_at = ? WHERE id = ? AND state = 'pending'",
                    [(err[:500], now, oid) for oid, err in failures],
                )

        if failures:
            await self._work(run)

    async def release_leases(self) -> None:
        await self._work(
            lambda db: db.execute("UPDATE outbox SET lease_until = 0 WHERE lease_until > 0")
        )

    # -- dead letters ---------------------------------------------------------------

    async def dead_letter_pending(self, sink: str, reason: str, *, now: float) -> int:
        def run(db: sqlite3.Connection) -> int:
            with db:
                db.execute("BEGIN IMMEDIATE")
                cur = db.execute(
                    "UPDATE outbox SET state = 'dead', lease_until = 0, last_error = ?,"
                    " dead_at = ? WHERE sink = ? AND state = 'pending'",
                    (reason[:500], now, sink),
                )
                return cur.rowcount

        return await self._work(run)

    @staticmethod
    def _where_dead(
        sink: str | None, ids: Sequence[int] | None, table: str = ""
    ) -> tuple[str, list[Any]]:
        t = f"{table}." if table else ""
        clause, args = f"{t}state = 'dead'", list[Any]()
        if sink is not None:
            clause += f" AND {t}sink = ?"
            args.append(sink)
        if ids is not None:
            clause += f" AND {t}id IN ({_marks(len(ids))})"
            args.extend(ids)
        return clause, args

    async def dead_letters(
        self, *, sink: str | None = None, limit: int = 100, after_id: int = 0
    ) -> list[DeadLetter]:
        clause, args = self._where_dead(sink, None, "o")

        def run(db: sqlite3.Connection) -> list[DeadLetter]:
            rows = db.execute(
                "SELECT o.id, o.sink, e.event_id, e.event_type, e.received_at, o.attempts,"
                " o.dead_at, o.last_error FROM outbox o JOIN events e ON e.seq = o.event_seq"
                f" WHERE {clause}"
                " AND o.id > ? ORDER BY o.id LIMIT ?",
                (*args, after_id, limit),
            ).fetchall()
            return [
                DeadLetter(r[0], r[1], r[2], r[3], r[4], r[5], r[6] or 0.0, r[7] or "")
                for r in rows
            ]

        return await self._read(run)

    async def requeue_dead(
        self, *, sink: str | None = None, ids: Sequence[int] | None = None, now: float
    ) -> int:
        clause, args = self._where_dead(sink, ids)

        def run(db: sqlite3.Connection) -> int:
            with db:
                db.execute("BEGIN IMMEDIATE")
                cur = db.execute(
                    "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?,"
                    # dead_at now records the re-queue: the age limit restarts from it.
                    f" lease_until = 0, dead_at = ? WHERE {clause}",
                    (now, now, *args),
                )
                return cur.rowcount

        return await self._work(run)

    async def purge_dead(self, *, sink: str | None = None, ids: Sequence[int] | None = None) -> int:
        clause, args = self._where_dead(sink, ids)

        def run(db: sqlite3.Connection) -> int:
            with db:
                db.execute("BEGIN IMMEDIATE")
                gone = [r[0] for r in db.execute(f"SELECT id FROM outbox WHERE {clause}", args)]
                if not gone:
                    return 0
                # A purged row counts as handled: the event's body goes once nothing needs it.
                db.execute(
                    f"UPDATE outbox SET state = 'delivered', last_error = 'purged'"
                    f" WHERE id IN ({_marks(len(gone))})",
                    gone,
                )
                freed = self._release_bodies(db, gone)
            self._uncount(freed)
            return len(gone)

        return await self._work(run)

    # -- queries and upkeep -------------------------------------------------------

    async def has_event(self, source: str, event_id: str) -> bool:
        row = await self._read(
            lambda db: db.execute(
                "SELECT 1 FROM events WHERE source = ? AND event_id = ?", (source, event_id)
            ).fetchone()
        )
        return row is not None

    async def has_delivery(self, source: str, delivery_id: str) -> bool:
        row = await self._work(
            lambda db: db.execute(
                "SELECT 1 FROM events WHERE source = ? AND delivery_id = ? LIMIT 1",
                (source, delivery_id),
            ).fetchone()
        )
        return row is not None

    async def record_replay(self, record: ReplayRecord) -> None:
        def run(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.execute(
                    "INSERT OR REPLACE INTO replays VALUES (?, ?, ?, ?, ?)",
                    (
                        record.webhook_id,
                        record.delivery_id,
                        record.event_id,
                        record.requested_at,
                        record.outcome[:500],
                    ),
                )

        await self._work(run)

    async def replays_since(self, webhook_id: str, since: float) -> dict[str, ReplayRecord]:
        def run(db: sqlite3.Connection) -> dict[str, ReplayRecord]:
            rows = db.execute(
                "SELECT webhook_id, delivery_id, event_id, requested_at, outcome FROM replays"
                " WHERE webhook_id = ? AND requested_at >= ?",
                (webhook_id, since),
            ).fetchall()
            return {r[1]: ReplayRecord(*r) for r in rows}

        return await self._read(run)

    @staticmethod
    def _spool_totals(db: sqlite3.Connection) -> tuple[int, int]:
        b, n = db.execute(
            "SELECT coalesce(sum(size), 0), count(*) FROM events WHERE body IS NOT NULL"
        ).fetchone()
        return int(b), int(n)

    async def _refresh_spool(self) -> None:
        """Recount the quota counters from the file (others may have purged).

        Runs on the writer thread, where every other counter change happens, so no
        commit can slip between the count and the assignment.
        """

        def run(db: sqlite3.Connection) -> None:
            b, n = self._spool_totals(db)
            with self._spool_lock:
                self._spool_bytes, self._spool_events = b, n

        await self._work(run)

    async def stats(self) -> StoreStats:
        def run(db: sqlite3.Connection) -> tuple[int, int, int, dict[str, SinkStats]]:
            spool_bytes, spool_events = self._spool_totals(db)
            (held,) = db.execute("SELECT count(*) FROM events").fetchone()
            per: dict[str, SinkStats] = {}
            for sink, pending, dead, oldest in db.execute(
                "SELECT o.sink, sum(o.state = 'pending'), sum(o.state = 'dead'),"
                " min(CASE WHEN o.state = 'pending' THEN e.received_at END)"
                " FROM outbox o JOIN events e ON e.seq = o.event_seq"
                " WHERE o.state != 'delivered' GROUP BY o.sink"
            ):
                per[sink] = SinkStats(int(pending), int(dead), oldest)
            return spool_bytes, spool_events, int(held), per

        spool_bytes, spool_events, held, per = await self._read(run)
        return StoreStats(spool_bytes, spool_events, held, per, self._commits)

    async def prune(self, *, now: float) -> int:
        cutoff = now - self.dedup_window_seconds

        def run(db: sqlite3.Connection) -> int:
            with db:
                db.execute("BEGIN IMMEDIATE")
                # Only events every sink has (body released) are forgotten.
                cur = db.execute(
                    "DELETE FROM events WHERE body IS NULL AND received_at < ?", (cutoff,)
                )
                db.execute("DELETE FROM replays WHERE requested_at < ?", (cutoff,))
                return cur.rowcount

        pruned = await self._work(run)
        await self._refresh_spool()
        return pruned

    async def writable(self) -> bool:
        if self._writer is None or self._writer.done():
            return False  # without the group-commit task nothing can be ingested

        def run(db: sqlite3.Connection) -> bool:
            db.execute("BEGIN IMMEDIATE")
            db.execute("ROLLBACK")
            return True

        try:
            return await self._work(run)
        except StoreError:
            return False
