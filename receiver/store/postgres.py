"""The shared store: PostgreSQL through psycopg 3 (async, pooled).

Any number of receiver processes (ingress and dispatch replicas) use one database.

- *ingest*: requests that arrive while a commit is in flight are queued and written
  together (group commit) in one statement, so one transaction: dedup insert, outbox
  rows and the spool counters. Two writer tasks per process let the next group
  commit while one is in flight. The answer goes out only after the commit
  returned, with ``synchronous_commit`` at least ``on`` (WAL flushed). A group is
  inserted in (source, event id) order, so two replicas writing the same events
  lock them in the same order and cannot deadlock.
- *dispatch*: a claim is one ``FOR UPDATE SKIP LOCKED`` statement that also sets
  ``lease_until``; other replicas skip rows being claimed and ignore leased rows, so
  a row goes to one dispatcher at a time, and a crashed replica's rows are claimed
  again once their lease has passed. Claims and delivery marks commit with
  ``synchronous_commit = off``: a mark lost in a database crash means one more send
  (at-least-once allows it), never a lost event.
- *body release*: a delivery mark locks the event rows first (``FOR UPDATE``, in seq
  order), so two sinks' dispatchers finishing one event at the same moment cannot
  both miss that the other is done and leave the body held forever.
- *quota*: undelivered bytes / events are kept in ``spool_counters``, updated in
  the same transactions that change them and spread over a few rows to avoid one
  hot row lock; every replica checks the quota against the same committed sums (a
  16-row read). Replicas committing at the same instant can together overshoot the
  quota by at most one group each.
- *clocks*: leases and backoff times come from each replica's clock; keep replicas
  NTP-synchronised and ``lease_seconds`` well above clock skew plus the slowest send.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from receiver.errors import StoreError
from receiver.store import _group
from receiver.store._migrations import pending
from receiver.store._postgres_sql import (
    CLAIM,
    COUNTER_SLOTS,
    MIGRATION_TABLE,
    MIGRATIONS,
    STORE_GROUP,
)
from receiver.store.base import (
    Claimed,
    DeadLetter,
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

__all__ = ["PostgresStore"]

Conn = psycopg.AsyncConnection[TupleRow]

_WRITERS = 2  # groups committing at once per process
_CONNECT_TIMEOUT = 10.0  # seconds to get a connection before answering "unavailable"
_PRUNE_BATCH = 5000
_PRUNE_ROUNDS = 200  # at most 1M events per prune call; the next call continues


def _describe(exc: psycopg.Error) -> str:
    # The first line names the failure; later lines (DETAIL) may quote row values.
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"postgresql: {type(exc).__name__}: {first}"[:300]


def _where_dead(sink: str | None, ids: Sequence[int] | None) -> tuple[str, list[Any]]:
    clause, args = "state = 'dead'", list[Any]()
    if sink is not None:
        clause += " AND sink = %s"
        args.append(sink)
    if ids is not None:
        clause += " AND id = ANY(%s)"
        args.append(list(ids))
    return clause, args


class PostgresStore:
    """The multi-replica store. See the module docstring for its rules."""

    shared: bool = True  # other replicas hold live leases: never release them all

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        dedup_window_seconds: float = 7 * 86400,
        max_spool_bytes: int = 1024**3,
        max_spool_events: int = 1_000_000,
        pool_max_size: int = 10,
    ) -> None:
        self._url = url
        self._password = password
        self.dedup_window_seconds = dedup_window_seconds
        self.max_spool_bytes = max_spool_bytes
        self.max_spool_events = max_spool_events
        self._pool_max_size = pool_max_size
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._queue: list[_group.Waiting] = []
        self._wakeup = asyncio.Event()
        self._writers: list[asyncio.Task[None]] = []
        self._force_sync = False
        self._commits = 0
        self._rng = random.Random()
        self.migrated: SchemaVersion | None = None

    # -- plumbing -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _conn(self, timeout: float = _CONNECT_TIMEOUT) -> AsyncIterator[Conn]:
        """A pooled connection (autocommit); every psycopg error becomes a StoreError."""
        pool = self._pool
        if pool is None:
            raise StoreError("store is not open")
        try:
            async with pool.connection(timeout=timeout) as conn:
                yield conn
        except psycopg.Error as exc:
            raise StoreError(_describe(exc)) from exc

    @contextlib.asynccontextmanager
    async def _work(self) -> AsyncIterator[Conn]:
        """A transaction whose loss in a crash only means a re-send (see module doc)."""
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit = off")
            yield conn

    async def open(self) -> None:
        kwargs: dict[str, Any] = {"autocommit": True}
        if self._password is not None:
            kwargs["password"] = self._password
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self._url,
            kwargs=kwargs,
            min_size=1,
            max_size=self._pool_max_size,
            open=False,
            timeout=_CONNECT_TIMEOUT,
            name="bighub-siem",
            # A connection broken by a database restart is replaced, not handed out.
            check=AsyncConnectionPool.check_connection,
        )
        try:
            await pool.open(wait=True, timeout=_CONNECT_TIMEOUT)
        except psycopg.Error as exc:
            await pool.close()
            raise StoreError(_describe(exc)) from exc
        self._pool = pool
        try:
            self.migrated = await self._migrate()
            async with self._conn() as conn:
                cur = await conn.execute("SHOW synchronous_commit")
                row = await cur.fetchone()
            # "off" on the server would answer 2xx before the WAL flush: raise it for ingest.
            self._force_sync = row is not None and row[0] == "off"
        except BaseException:
            await self.close()
            raise
        self._writers = [
            asyncio.create_task(self._write_loop(), name=f"postgres-group-commit-{n}")
            for n in range(_WRITERS)
        ]

    async def _migrate(self) -> SchemaVersion:
        # Transactional DDL: every missing migration and its record commit together.
        # Replicas starting together take turns on an advisory lock held until commit.
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SET LOCAL statement_timeout = 0")
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext("
                "coalesce(current_schema(), '') || '.bighub_siem.migrate'))"
            )
            await conn.execute(MIGRATION_TABLE)
            cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
            row = await cur.fetchone()
            before = int(row[0]) if row is not None else 0
            for m in pending(MIGRATIONS, before, backend="postgresql"):
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, description) VALUES (%s, %s)",
                    (m.version, m.description),
                )
        return SchemaVersion(before, len(MIGRATIONS))

    async def close(self) -> None:
        for task in self._writers:
            task.cancel()
        for task in self._writers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._writers = []
        for _, fut in self._queue:
            if not fut.done():
                fut.set_exception(StoreError("store closed"))
        self._queue.clear()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # -- ingest (group commit) --------------------------------------------------------

    async def ingest(self, event: NewEvent) -> IngestResult:
        if not self._writers or any(task.done() for task in self._writers):
            raise StoreError("store is not open")
        fut: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        self._queue.append((event, fut))
        self._wakeup.set()
        return await fut

    async def _write_loop(self) -> None:
        # Each writer takes everything queued as one group. While one group commits,
        # a second writer commits what arrived meanwhile: the server flushes
        # concurrent commits together, so this halves the wait without losing batching.
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            batch, self._queue = _group.take_group(self._queue)
            try:
                results = await self._commit([item for item, _ in batch])
            except asyncio.CancelledError:  # closing: nobody may wait for this group forever
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(StoreError("store closed during the commit"))
                raise
            except Exception as exc:  # the loop must outlive any one failed group
                err = exc if isinstance(exc, StoreError) else StoreError(repr(exc)[:300])
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            for (_, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)

    async def _commit(self, items: Sequence[NewEvent]) -> list[IngestResult]:
        async with self._conn() as conn, self._ingest_transaction(conn):
            spool_bytes, spool_events = await self._spool_totals(conn)
            p = _group.plan(
                items,
                spool_bytes=spool_bytes,
                spool_events=spool_events,
                max_bytes=self.max_spool_bytes,
                max_events=self.max_spool_events,
            )
            stored = await self._store_group(conn, [items[i] for i in p.take])
            held = await self._held(conn, [items[i] for i in p.over])
        self._commits += 1
        return _group.answers(items, p, stored, held)

    @contextlib.asynccontextmanager
    async def _ingest_transaction(self, conn: Conn) -> AsyncIterator[None]:
        """Nothing, normally: the group is one statement, committed on its own.

        If the server runs with ``synchronous_commit = off`` a commit could return
        before the WAL flush, so the group then runs in a transaction that turns it on.
        """
        if not self._force_sync:
            yield
            return
        async with conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit = on")
            yield

    async def _store_group(
        self, conn: Conn, events: Sequence[NewEvent]
    ) -> dict[tuple[str, str], int]:
        """Insert what is new; return the seq of each event this call stored."""
        if not events:
            return {}
        rows = [
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
                ev.body if ev.sinks else None,  # routed nowhere: keep only the id for dedup
            )
            for ev in events
        ]
        routes = [(ev.source, ev.event_id, sink) for ev in events for sink in ev.sinks]
        params: list[Any] = [list(col) for col in zip(*rows, strict=True)]
        params += [[r[0] for r in routes], [r[1] for r in routes], [r[2] for r in routes]]
        params.append(self._rng.randrange(COUNTER_SLOTS))
        cur = await conn.execute(STORE_GROUP, params)
        return {(r[1], r[2]): int(r[0]) for r in await cur.fetchall()}

    @staticmethod
    async def _held(conn: Conn, events: Sequence[NewEvent]) -> set[tuple[str, str]]:
        if not events:
            return set()
        cur = await conn.execute(
            "SELECT source, event_id FROM events WHERE (source, event_id) IN"
            " (SELECT * FROM unnest(%s::text[], %s::text[]))",
            ([ev.source for ev in events], [ev.event_id for ev in events]),
        )
        return {(r[0], r[1]) for r in await cur.fetchall()}

    async def _count(self, conn: Conn, delta_bytes: int, delta_events: int) -> None:
        if delta_bytes or delta_events:
            await conn.execute(
                "UPDATE spool_counters SET bytes = bytes + %s, events = events + %s"
                " WHERE slot = %s",
                (delta_bytes, delta_events, self._rng.randrange(COUNTER_SLOTS)),
            )

    @staticmethod
    async def _spool_totals(conn: Conn) -> tuple[int, int]:
        cur = await conn.execute(
            "SELECT coalesce(sum(bytes), 0)::bigint, coalesce(sum(events), 0)::bigint"
            " FROM spool_counters"
        )
        row = await cur.fetchone()
        return (int(row[0]), int(row[1])) if row is not None else (0, 0)

    # -- dispatch -------------------------------------------------------------------------

    async def claim(
        self, sink: str, *, limit: int, max_bytes: int, now: float, lease_seconds: float
    ) -> list[Claimed]:
        params = {
            "sink": sink,
            "now": now,
            "limit": limit,
            "max_bytes": max_bytes,
            "until": now + lease_seconds,
        }
        async with self._work() as conn:
            # Binary results: bodies arrive as bytes instead of hex text twice their size.
            cur = conn.cursor(binary=True)
            await cur.execute(CLAIM, params)
            rows = await cur.fetchall()
        # dead_at on a pending row is the time it was re-queued.
        return [Claimed(int(r[0]), int(r[1]), event_from_row(r[2:14]), r[14]) for r in rows]

    async def pending_summary(self, sink: str, *, now: float, limit: int) -> PendingSummary:
        """Due rows (counted up to ``limit``) and, when none is due, the next due time."""
        async with self._conn() as conn:
            cur = await conn.execute(
                "SELECT count(*), min(received_at) FROM ("
                " SELECT e.received_at FROM outbox o JOIN events e ON e.seq = o.event_seq"
                " WHERE o.sink = %(sink)s AND o.state = 'pending'"
                " AND o.next_attempt_at <= %(now)s AND o.lease_until <= %(now)s"
                " ORDER BY o.id LIMIT %(cap)s) due",
                {"sink": sink, "now": now, "cap": limit},
            )
            row = await cur.fetchone()
            due, oldest = (int(row[0]), row[1]) if row is not None else (0, None)
            next_due = None
            if due == 0:
                cur = await conn.execute(
                    "SELECT min(greatest(next_attempt_at, lease_until)) FROM outbox"
                    " WHERE sink = %s AND state = 'pending'",
                    (sink,),
                )
                row = await cur.fetchone()
                next_due = row[0] if row is not None else None
        return PendingSummary(due, oldest, next_due)

    async def _lock_events(self, conn: Conn, outbox_ids: Sequence[int]) -> None:
        # Always in seq order, so two transactions locking overlapping events queue
        # up instead of deadlocking.
        await conn.execute(
            "SELECT 1 FROM events WHERE seq IN"
            " (SELECT event_seq FROM outbox WHERE id = ANY(%s)) ORDER BY seq FOR UPDATE",
            (list(outbox_ids),),
        )

    async def _release_bodies(self, conn: Conn, outbox_ids: Sequence[int]) -> None:
        # A new statement sees every transaction committed before our locks were
        # granted, including another sink's mark of the same event.
        cur = await conn.execute(
            "WITH freed AS (UPDATE events e SET body = NULL WHERE e.body IS NOT NULL"
            " AND e.seq IN (SELECT event_seq FROM outbox WHERE id = ANY(%s))"
            " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_seq = e.seq"
            " AND o.state <> 'delivered') RETURNING e.size)"
            " SELECT coalesce(sum(size), 0)::bigint, count(*) FROM freed",
            (list(outbox_ids),),
        )
        row = await cur.fetchone()
        if row is not None and row[1]:
            await self._count(conn, -int(row[0]), -int(row[1]))

    async def mark_delivered(self, outbox_ids: Sequence[int]) -> None:
        if not outbox_ids:
            return
        async with self._work() as conn:
            await self._lock_events(conn, outbox_ids)
            await conn.execute(
                "UPDATE outbox SET state = 'delivered', lease_until = 0, last_error = NULL"
                " WHERE id = ANY(%s)",
                (list(outbox_ids),),
            )
            await self._release_bodies(conn, outbox_ids)

    async def mark_retry(self, updates: Sequence[RetryUpdate]) -> None:
        if not updates:
            return
        async with self._work() as conn:
            await conn.execute(
                "UPDATE outbox o SET attempts = o.attempts + u.charge,"
                " next_attempt_at = u.at, lease_until = 0, last_error = u.error"
                " FROM unnest(%s::bigint[], %s::int[], %s::float8[], %s::text[])"
                " AS u(id, charge, at, error) WHERE o.id = u.id AND o.state = 'pending'",
                (
                    [u.outbox_id for u in updates],
                    [int(u.charge) for u in updates],
                    [u.next_attempt_at for u in updates],
                    [u.error[:500] for u in updates],
                ),
            )

    async def mark_dead(self, failures: Sequence[tuple[int, str]], *, now: float) -> None:
        if not failures:
            return
        async with self._work() as conn:
            await conn.execute(
                "UPDATE outbox o SET state = 'dead', attempts = o.attempts + 1,"
                " lease_until = 0, last_error = u.error, dead_at = %s"
                " FROM unnest(%s::bigint[], %s::text[]) AS u(id, error)"
                " WHERE o.id = u.id AND o.state = 'pending'",
                (now, [f[0] for f in failures], [f[1][:500] for f in failures]),
            )

    async def release_leases(self) -> None:
        """Forget every lease. Only safe when no other process dispatches from this database."""
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE outbox SET lease_until = 0 WHERE state = 'pending' AND lease_until > 0"
            )

    # -- dead letters -----------------------------------------------------------------

    async def dead_letter_pending(self, sink: str, reason: str, *, now: float) -> int:
        async with self._conn() as conn:
            cur = await conn.execute(
                "UPDATE outbox SET state = 'dead', lease_until = 0, last_error = %s,"
                " dead_at = %s WHERE sink = %s AND state = 'pending'",
                (reason[:500], now, sink),
            )
            return cur.rowcount

    async def dead_letters(
        self, *, sink: str | None = None, limit: int = 100, after_id: int = 0
    ) -> list[DeadLetter]:
        clause, args = _where_dead(sink, None)
        async with self._conn() as conn:
            cur = await conn.execute(
                "SELECT o.id, o.sink, e.event_id, e.event_type, e.received_at, o.attempts,"
                " o.dead_at, o.last_error FROM outbox o JOIN events e ON e.seq = o.event_seq"
                f" WHERE {clause.replace('state', 'o.state').replace('sink =', 'o.sink =')}"
                " AND o.id > %s ORDER BY o.id LIMIT %s",
                (*args, after_id, limit),
            )
            rows = await cur.fetchall()
        return [
            DeadLetter(r[0], r[1], r[2], r[3], r[4], r[5], r[6] or 0.0, r[7] or "") for r in rows
        ]

    async def requeue_dead(
        self, *, sink: str | None = None, ids: Sequence[int] | None = None, now: float
    ) -> int:
        clause, args = _where_dead(sink, ids)
        async with self._conn() as conn:
            cur = await conn.execute(
                "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = %s,"
                # dead_at now records the re-queue: the age limit restarts from it.
                f" lease_until = 0, dead_at = %s WHERE {clause}",
                (now, now, *args),
            )
            return cur.rowcount

    async def purge_dead(self, *, sink: str | None = None, ids: Sequence[int] | None = None) -> int:
        clause, args = _where_dead(sink, ids)
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(f"SELECT id FROM outbox WHERE {clause}", args)
            gone = [int(r[0]) for r in await cur.fetchall()]
            if not gone:
                return 0
            await self._lock_events(conn, gone)
            # A purged row counts as handled: the event's body goes once nothing needs it.
            cur = await conn.execute(
                "UPDATE outbox SET state = 'delivered', last_error = 'purged'"
                " WHERE id = ANY(%s) AND state = 'dead'",
                (gone,),
            )
            purged = cur.rowcount
            await self._release_bodies(conn, gone)
            return purged

    # -- queries and upkeep ---------------------------------------------------------------

    async def _exists(self, sql: str, args: Sequence[Any]) -> bool:
        async with self._conn() as conn:
            cur = await conn.execute(sql, args)
            return await cur.fetchone() is not None

    async def has_event(self, source: str, event_id: str) -> bool:
        return await self._exists(
            "SELECT 1 FROM events WHERE source = %s AND event_id = %s", (source, event_id)
        )

    async def has_delivery(self, source: str, delivery_id: str) -> bool:
        """Whether an event held for ``source`` arrived with this delivery id header."""
        return await self._exists(
            "SELECT 1 FROM events WHERE source = %s AND delivery_id = %s LIMIT 1",
            (source, delivery_id),
        )

    async def record_replay(self, record: ReplayRecord) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO replays (webhook_id, delivery_id, event_id, requested_at, outcome)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (webhook_id, delivery_id) DO UPDATE"
                " SET event_id = excluded.event_id, requested_at = excluded.requested_at,"
                " outcome = excluded.outcome",
                (
                    record.webhook_id,
                    record.delivery_id,
                    record.event_id,
                    record.requested_at,
                    record.outcome[:500],
                ),
            )

    async def replays_since(self, webhook_id: str, since: float) -> dict[str, ReplayRecord]:
        async with self._conn() as conn:
            cur = await conn.execute(
                "SELECT webhook_id, delivery_id, event_id, requested_at, outcome FROM replays"
                " WHERE webhook_id = %s AND requested_at >= %s",
                (webhook_id, since),
            )
            rows = await cur.fetchall()
        return {r[1]: ReplayRecord(r[0], r[1], r[2], r[3], r[4]) for r in rows}

    async def stats(self) -> StoreStats:
        async with self._conn() as conn:
            spool_bytes, spool_events = await self._spool_totals(conn)
            cur = await conn.execute("SELECT count(*) FROM events")
            row = await cur.fetchone()
            held = int(row[0]) if row is not None else 0
            cur = await conn.execute(
                "SELECT o.sink, count(*) FILTER (WHERE o.state = 'pending'),"
                " count(*) FILTER (WHERE o.state = 'dead'),"
                " min(e.received_at) FILTER (WHERE o.state = 'pending')"
                " FROM outbox o JOIN events e ON e.seq = o.event_seq"
                " WHERE o.state IN ('pending', 'dead') GROUP BY o.sink"
            )
            per = {r[0]: SinkStats(int(r[1]), int(r[2]), r[3]) for r in await cur.fetchall()}
        return StoreStats(spool_bytes, spool_events, held, per, self._commits)

    async def prune(self, *, now: float) -> int:
        cutoff = now - self.dedup_window_seconds
        pruned = 0
        async with self._conn() as conn:
            # Small batches that skip rows another replica is pruning: replicas run
            # this concurrently, and no transaction holds many locks for long.
            for _ in range(_PRUNE_ROUNDS):
                cur = await conn.execute(
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events"
                    " WHERE body IS NULL AND received_at < %s LIMIT %s FOR UPDATE SKIP LOCKED)",
                    (cutoff, _PRUNE_BATCH),
                )
                pruned += cur.rowcount
                if cur.rowcount < _PRUNE_BATCH:
                    break
            await conn.execute("DELETE FROM replays WHERE requested_at < %s", (cutoff,))
        return pruned

    async def writable(self) -> bool:
        try:
            async with self._conn(timeout=2.0) as conn:
                cur = await conn.execute(
                    "SELECT NOT pg_is_in_recovery()"
                    " AND current_setting('transaction_read_only') = 'off'"
                )
                row = await cur.fetchone()
        except StoreError:
            return False
        return bool(row is not None and row[0])
