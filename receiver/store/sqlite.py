"""The embedded store: one SQLite file in WAL mode.

All writes go through one connection on one thread, so writers never wait on
SQLite's file lock (whose busy handler sleeps in coarse steps); reads (dispatcher
reads, summaries, listings, metrics) use a second connection on its own thread,
which WAL lets run beside a write.

- ingest commits run with ``synchronous=FULL``: a commit returns only after the WAL
  is fsynced, and only then does the HTTP answer go out. Requests that arrive while
  a commit is in flight are committed together in the next transaction (group
  commit, ``_commit``), as one multi-row insert: a group that fits one statement is
  that one statement in autocommit mode (SQLite's implicit transaction), so the
  writer thread gives up the GIL a few times per group (the sqlite3 module lets it
  go around each step and reset), not for ``BEGIN``, every returned row and
  ``COMMIT`` besides; each time, taking it back waited on the busy event loop.
- dispatch bookkeeping (cursor moves, dead letters) runs with ``synchronous=NORMAL``:
  losing a cursor move in a power cut means the events are sent again, which
  at-least-once delivery allows; it never loses an event.
- upkeep (body release, prune) works in small batches, each its own short job on the
  writer thread, so an ingest group never waits behind more than one of them.

One ``serve`` process owns a file at a time (an exclusive lock file enforces it), so
its leases are a formality it clears at open; CLI commands such as ``dead-letters``
share the file through SQLite's own locking.

The schema version is ``PRAGMA user_version`` (see ``_migrations``).
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from receiver.errors import EventRefusedError, StoreError
from receiver.store import _group, _migrations
from receiver.store import _sqlite_cursors as ops
from receiver.store._commit import Admission, GroupCommitter
from receiver.store._sqlite_sql import INSERT_EVENT_COLS, MIGRATIONS, SCHEMA_VERSION
from receiver.store._sqlite_upkeep import Upkeep
from receiver.store.base import (
    DeadLetter,
    DeadLetterState,
    Filling,
    IngestResult,
    Lease,
    LogBatch,
    NewEvent,
    Progress,
    ReplayRecord,
    Requeued,
    RequeueSettlement,
    Route,
    SchemaVersion,
    StoreStats,
)

__all__ = ["SQLiteStore", "sqlite_path"]

T = TypeVar("T")
_ROWS_PER_INSERT = 500  # rows per multi-row INSERT statement (12 parameters each)


@functools.lru_cache(maxsize=64)
def _insert_sql(rows: int) -> str:
    # Held ids are filtered out before the insert instead of left to ON CONFLICT: a row
    # that conflicts still uses up an AUTOINCREMENT seq, and that gap would break the
    # reading of seqs from lastrowid (``_insert``). The VALUES rows are scanned in order
    # (a co-routine), so the seqs follow the order of the group.
    values = ",".join(["(?,?,?,?,?,?,?,?,?,?,?,?)"] * rows)
    return (
        f"INSERT INTO events ({INSERT_EVENT_COLS}) SELECT * FROM (VALUES {values}) AS v"
        " WHERE NOT EXISTS (SELECT 1 FROM events e"
        " WHERE e.source = v.column1 AND e.event_id = v.column2)"
        " ON CONFLICT (source, event_id) DO NOTHING"
    )


def sqlite_path(url: str) -> Path:
    """``sqlite:///rel/path`` -> ``rel/path``; ``sqlite:////abs/path`` -> ``/abs/path``."""
    if not url.startswith("sqlite:///"):
        raise ValueError("not a sqlite:/// URL")
    return Path(url[len("sqlite:///") :])


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
        max_dead_letter_bytes: int = 1024**3,
        min_free_bytes: int = 64 * 1024**2,
        admission: Admission | None = None,
        exclusive: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.dedup_window_seconds = dedup_window_seconds
        self.max_spool_bytes = max_spool_bytes
        self.max_spool_events = max_spool_events
        self.max_dead_letter_bytes = max_dead_letter_bytes
        self.min_free_bytes = min_free_bytes
        self.clock = clock
        self._exclusive = exclusive
        self._lock_fd: int | None = None
        self._write_pool = ThreadPoolExecutor(1, thread_name_prefix="sqlite-write")
        self._read_pool = ThreadPoolExecutor(1, thread_name_prefix="sqlite-read")
        self._write_db: sqlite3.Connection | None = None
        self._read_db: sqlite3.Connection | None = None
        self._sync = ""  # the writer connection's current synchronous mode
        self._committer = GroupCommitter(self._commit_group, admission=admission)
        # Spool counters (bytes, events): changed after commits, on the writer thread.
        self._spool_lock = threading.Lock()
        self._spool = [0, 0]
        self.upkeep = Upkeep(self)
        self.migrated: SchemaVersion | None = None

    # -- plumbing ---------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=30000")
        return db

    async def _on(self, pool: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pool, fn)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc

    def synchronous(self, db: sqlite3.Connection, mode: str) -> None:
        if self._sync != mode:
            db.execute(f"PRAGMA synchronous={mode}")
            self._sync = mode

    async def work(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a bookkeeping write on the writer thread (synchronous=NORMAL)."""
        db = self._write_db
        if db is None:
            raise StoreError("store is not open")

        def run() -> T:
            self.synchronous(db, "NORMAL")
            return fn(db)

        return await self._on(self._write_pool, run)

    async def look(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read on the reader thread."""
        db = self._read_db
        if db is None:
            raise StoreError("store is not open")
        return await self._on(self._read_pool, lambda: fn(db))

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._exclusive:
            self._take_lock()
        self._write_db = await self._on(self._write_pool, self._connect)
        self._sync = "FULL"
        self.migrated = await self.work(self._migrate)
        if self._exclusive:
            # This process owns the file: leases left by a crashed predecessor go.
            await self.work(
                lambda db: db.execute("UPDATE cursors SET owner = NULL, lease_until = 0")
            )
        self._read_db = await self._on(self._read_pool, self._connect)
        await self.work(self._recount)
        self._committer.start()

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
        for m in _migrations.pending(MIGRATIONS, before, backend="sqlite"):
            _apply(db, m.sql, m.version)
        return SchemaVersion(before, SCHEMA_VERSION)

    async def close(self) -> None:
        await self._committer.close()
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

    def ingest(
        self, event: NewEvent, *, alive: Callable[[], bool] | None = None
    ) -> Coroutine[Any, Any, IngestResult]:
        # The committer's coroutine itself, not one wrapped in another: a request's task
        # suspends and resumes through one coroutine frame fewer.
        return self._committer.submit(event, alive)

    async def _commit_group(self, items: Sequence[NewEvent]) -> list[IngestResult]:
        try:
            return await self._on(self._write_pool, partial(self._commit, items))
        except UnicodeEncodeError as exc:  # a lone surrogate: this event, not the group
            raise EventRefusedError(f"sqlite: {type(exc).__name__}") from exc

    def _commit(self, items: Sequence[NewEvent]) -> list[IngestResult]:
        db = self._write_db
        if db is None:
            raise sqlite3.OperationalError("store is not open")
        self.synchronous(db, "FULL")  # this commit is what the 2xx promises
        p = self._plan(items)
        take = sorted(p.take)  # arrival order: the log keeps the order requests came in
        new = [items[i] for i in take]
        if not p.over and len(new) <= _ROWS_PER_INSERT:
            # The common group: one INSERT, committed (WAL fsynced) before execute returns.
            stored = self._insert(db, new)
            held: set[_group.Key] = set()
        else:
            db.execute("BEGIN IMMEDIATE")
            try:
                stored = self._insert(db, new)
                held = self._held(db, [items[i] for i in p.over])
                db.execute("COMMIT")  # synchronous=FULL: returns after the WAL fsync
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        added = [ev for ev in new if _group.key(ev) in stored]
        with self._spool_lock:
            self._spool[0] += sum(len(e.body) for e in added)
            self._spool[1] += len(added)
        return _group.answers(items, p, stored, held)

    def _plan(self, items: Sequence[NewEvent]) -> _group.Plan:
        with self._spool_lock:
            spool_bytes, spool_events = self._spool
        return _group.plan(
            items,
            spool_bytes=spool_bytes,
            spool_events=spool_events,
            max_bytes=self.max_spool_bytes,
            max_events=self.max_spool_events,
        )

    @staticmethod
    def _insert(db: sqlite3.Connection, events: Sequence[NewEvent]) -> dict[_group.Key, int]:
        """Insert ``events`` (keys distinct) unless held; the seq of each one inserted.

        No ``RETURNING``: it hands each row back with its own step, and every step gives
        up the GIL. The rows one statement inserts take consecutive seqs in VALUES
        order (AUTOINCREMENT gives each new row the largest seq ever used + 1, held ids
        never reach the insert, and the statement holds the write lock throughout), so
        the cursor's ``lastrowid`` and ``rowcount`` say them all when every row was new;
        a statement that met held ids reads back the seqs it made.
        """
        stored: dict[_group.Key, int] = {}
        for start in range(0, len(events), _ROWS_PER_INSERT):
            chunk = events[start : start + _ROWS_PER_INSERT]
            params: list[Any] = []
            for ev in chunk:
                params += (
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
            cur = db.execute(_insert_sql(len(chunk)), params)
            inserted, last = cur.rowcount, cur.lastrowid
            if inserted == len(chunk) and last is not None:
                first = last - inserted + 1
                for n, ev in enumerate(chunk):
                    stored[(ev.source, ev.event_id)] = first + n
            elif inserted > 0 and last is not None:
                for seq, source, event_id in db.execute(
                    "SELECT seq, source, event_id FROM events WHERE seq BETWEEN ? AND ?",
                    (last - inserted + 1, last),
                ):
                    stored[(source, event_id)] = int(seq)
        return stored

    @staticmethod
    def _held(db: sqlite3.Connection, events: Sequence[NewEvent]) -> set[_group.Key]:
        held: set[_group.Key] = set()
        for ev in events:
            if db.execute(
                "SELECT 1 FROM events WHERE source = ? AND event_id = ?",
                (ev.source, ev.event_id),
            ).fetchone():
                held.add(_group.key(ev))
        return held

    def _recount(self, db: sqlite3.Connection) -> None:
        """Count the spool from the file, at open. From then on only this process
        changes it (ingest adds, release subtracts, both on the writer thread)."""
        b, n = db.execute(
            "SELECT coalesce(sum(size), 0), count(*) FROM events WHERE body IS NOT NULL"
            " AND seq > (SELECT coalesce(value, 0) FROM meta WHERE key = 'released_upto')"
        ).fetchone()
        with self._spool_lock:
            self._spool = [int(b), int(n)]

    def uncount(self, freed_bytes: int, freed_events: int) -> None:
        with self._spool_lock:
            self._spool[0] -= freed_bytes
            self._spool[1] -= freed_events

    @property
    def spool(self) -> tuple[int, int]:
        with self._spool_lock:
            return self._spool[0], self._spool[1]

    @property
    def commits(self) -> int:
        return self._committer.commits

    # -- cursors and dispatch -------------------------------------------------------

    async def ensure_cursors(self, routes: Sequence[Route]) -> None:
        await self.work(lambda db: ops.ensure_cursors(db, routes))

    async def acquire(
        self, sink: str, owner: str, *, lease_seconds: float, create: bool = True
    ) -> Lease | None:
        return await self.work(
            lambda db: ops.acquire(db, sink, owner, lease_seconds, self.clock(), create)
        )

    async def renew(self, lease: Lease, *, lease_seconds: float) -> bool:
        return await self.work(lambda db: ops.renew(db, lease, lease_seconds, self.clock()))

    async def release_lease(self, lease: Lease) -> None:
        await self.work(lambda db: ops.release_lease(db, lease))

    async def read(
        self,
        lease: Lease,
        route: Route,
        *,
        limit: int,
        max_bytes: int,
        fill_wait: float = 0.0,
        now: float = 0.0,
        filling: Filling | None = None,
    ) -> LogBatch:
        return await self.look(
            lambda db: ops.read(db, lease, route, limit, max_bytes, fill_wait, now, filling)
        )

    async def advance(self, lease: Lease, progress: Progress) -> Lease:
        return await self.work(
            lambda db: ops.advance(db, lease, progress, self.clock(), self.max_dead_letter_bytes)
        )

    async def requeued(
        self, sink: str, *, now: float, limit: int, max_bytes: int
    ) -> list[Requeued]:
        return await self.look(lambda db: ops.requeued(db, sink, now, limit, max_bytes))

    async def settle_requeued(self, lease: Lease, settlement: RequeueSettlement) -> None:
        await self.work(lambda db: ops.settle_requeued(db, lease, settlement, self.clock()))

    async def retire_sink(self, sink: str, reason: str, *, now: float) -> int:
        return await self.work(lambda db: ops.retire_sink(db, sink, reason, now))

    async def cursor_sinks(self) -> list[str]:
        rows = await self.look(lambda db: db.execute("SELECT sink FROM cursors").fetchall())
        return sorted(r[0] for r in rows)

    # -- dead letters ---------------------------------------------------------------

    async def dead_letters(
        self,
        *,
        sink: str | None = None,
        limit: int = 100,
        after_id: int = 0,
        state: DeadLetterState = "dead",
    ) -> list[DeadLetter]:
        return await self.look(lambda db: ops.dead_letters(db, sink, limit, after_id, state))

    async def requeue_dead(
        self, *, sink: str | None = None, ids: Sequence[int] | None = None, now: float
    ) -> int:
        return await self.work(lambda db: ops.requeue_dead(db, sink, ids, now))

    async def purge_dead(self, *, sink: str | None = None, ids: Sequence[int] | None = None) -> int:
        return await self.work(lambda db: ops.purge_dead(db, sink, ids))

    # -- queries and upkeep -------------------------------------------------------

    async def has_event(self, source: str, event_id: str) -> bool:
        row = await self.look(
            lambda db: db.execute(
                "SELECT 1 FROM events WHERE source = ? AND event_id = ?", (source, event_id)
            ).fetchone()
        )
        return row is not None

    async def has_delivery(self, source: str, delivery_id: str) -> bool:
        row = await self.look(
            lambda db: db.execute(
                "SELECT 1 FROM events WHERE source = ? AND delivery_id = ? LIMIT 1",
                (source, delivery_id),
            ).fetchone()
        )
        return row is not None

    async def record_replay(self, record: ReplayRecord) -> None:
        def run(db: sqlite3.Connection) -> None:
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

        await self.work(run)

    async def replays_since(self, webhook_id: str, since: float) -> dict[str, ReplayRecord]:
        def run(db: sqlite3.Connection) -> dict[str, ReplayRecord]:
            rows = db.execute(
                "SELECT webhook_id, delivery_id, event_id, requested_at, outcome FROM replays"
                " WHERE webhook_id = ? AND requested_at >= ?",
                (webhook_id, since),
            ).fetchall()
            return {r[1]: ReplayRecord(*r) for r in rows}

        return await self.look(run)

    async def stats(self) -> StoreStats:
        return await self.upkeep.stats()

    async def release(self) -> int:
        return await self.upkeep.release()

    async def prune(self, *, now: float) -> int:
        return await self.upkeep.prune(now=now)

    async def writable(self) -> bool:
        if not self._committer.running:
            return False  # without the group-commit task nothing can be ingested
        return await self.upkeep.writable()
