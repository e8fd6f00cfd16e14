"""The shared store: PostgreSQL through psycopg 3 (async, pooled).

Any number of receiver processes (ingress and dispatch replicas) use one database.

- *ingest*: requests that arrive while a commit is in flight are queued and written
  together by one writer task per process, in one statement and so one transaction
  (group commit): dedup insert, outbox rows and the spool counters. The answer goes
  out only after the commit returned, with ``synchronous_commit`` at least ``on``
  (WAL flushed).
  A batch is inserted in (source, event id) order, so two replicas writing the same
  events lock them in the same order and cannot deadlock.
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
from receiver.store._migrations import pending
from receiver.store._postgres_schema import COUNTER_SLOTS, MIGRATIONS
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
)
from sinks import Event

__all__ = ["PostgresStore"]

Conn = psycopg.AsyncConnection[TupleRow]
_Waiting = tuple[NewEvent, "asyncio.Future[IngestResult]"]  # an ingest call awaiting its group

_WRITERS = 2  # groups committing at once per process
_GROUP_MAX = 2000  # events per group commit; bounds one transaction's latency
_GROUP_MAX_BYTES = 32 * 1024**2  # body bytes per group: one bytea[] parameter holds them all
_CONNECT_TIMEOUT = 10.0  # seconds to get a connection before answering "unavailable"
_DUE_CAP = 10_000  # pending_summary counts due rows up to this many
_PRUNE_BATCH = 5000
_PRUNE_ROUNDS = 200  # at most 1M events per prune call; the next call continues

_EVENT_COLS = (
    "e.seq, e.event_id, e.id_origin, e.event_type, e.category, e.occurred_at, "
    "e.received_at, e.source, e.delivery_id, e.body, e.signature, e.ts_header"
)

# One statement (so one implicit transaction, one commit, one round trip) stores a
# group: the events, their outbox rows and the spool counters. The events go in
# (source, event id) order; the counter row is locked only after every event insert
# (its subquery reads the finished "ins"), so replicas take locks in the same order:
# event keys, then a counter row.
_STORE_GROUP = """
WITH ins AS (
    INSERT INTO events (source, event_id, id_origin, event_type, category, occurred_at,
                        received_at, delivery_id, signature, ts_header, size, body)
    SELECT u.source, u.event_id, u.id_origin, u.event_type, u.category, u.occurred_at,
           u.received_at, u.delivery_id, u.signature, u.ts_header, u.size, u.body
    FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
                %s::float8[], %s::text[], %s::text[], %s::text[], %s::int[], %b::bytea[])
         WITH ORDINALITY AS u(source, event_id, id_origin, event_type, category, occurred_at,
                              received_at, delivery_id, signature, ts_header, size, body, n)
    ORDER BY u.n
    ON CONFLICT (source, event_id) DO NOTHING
    RETURNING seq, source, event_id, size, body IS NOT NULL AS routed
), routes AS (
    INSERT INTO outbox (event_seq, sink)
    SELECT ins.seq, r.sink
    FROM ins JOIN unnest(%s::text[], %s::text[], %s::text[]) WITH ORDINALITY
                  AS r(source, event_id, sink, n) USING (source, event_id)
    ORDER BY ins.seq, r.n
), counted AS (
    UPDATE spool_counters c SET bytes = c.bytes + t.add_bytes, events = c.events + t.add_events
    FROM (SELECT coalesce(sum(size), 0) AS add_bytes, count(*) AS add_events
          FROM ins WHERE routed) t
    WHERE c.slot = %s AND t.add_events > 0
)
SELECT seq, source, event_id FROM ins
"""  # %b: the bodies go as a binary bytea[], not as hex text twice their size

# One statement: pick the oldest due rows nobody is claiming, cut the batch at
# max_bytes (the first row always goes), lease what was taken, return it with events.
_CLAIM = f"""
WITH candidates AS (
    SELECT o.id, e.size FROM outbox o JOIN events e ON e.seq = o.event_seq
    WHERE o.sink = %(sink)s AND o.state = 'pending'
      AND o.next_attempt_at <= %(now)s AND o.lease_until <= %(now)s
    ORDER BY o.id LIMIT %(limit)s
    FOR UPDATE OF o SKIP LOCKED
), sized AS (
    SELECT id, row_number() OVER w AS n, sum(size) OVER w AS running
    FROM candidates WINDOW w AS (ORDER BY id)
), leased AS (
    UPDATE outbox o SET lease_until = %(until)s FROM sized
    WHERE o.id = sized.id AND (sized.n = 1 OR sized.running <= %(max_bytes)s)
    RETURNING o.id, o.attempts, o.event_seq
)
SELECT l.id, l.attempts, {_EVENT_COLS} FROM leased l JOIN events e ON e.seq = l.event_seq
ORDER BY l.id
"""

_MIGRATION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    description text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


def _event(row: Sequence[Any]) -> Event:
    return Event(
        seq=row[0],
        event_id=row[1],
        id_origin=row[2],
        event_type=row[3],
        category=row[4],
        occurred_at=row[5],
        received_at=row[6],
        source=row[7],
        delivery_id=row[8],
        body=bytes(row[9]),
        signature=row[10],
        timestamp=row[11],
    )


def _describe(exc: psycopg.Error) -> str:
    # The first line names the failure; later lines (DETAIL) may quote row values.
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"postgresql: {type(exc).__name__}: {first}"[:300]


def _take_group(queue: list[_Waiting]) -> tuple[list[_Waiting], list[_Waiting]]:
    """The next group (at least one event) and the rest of the queue."""
    size = n = 0
    while n < min(len(queue), _GROUP_MAX):
        size += len(queue[n][0].body)
        if n and size > _GROUP_MAX_BYTES:
            break
        n += 1
    return queue[:n], queue[n:]


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
        self._queue: list[_Waiting] = []
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
            await conn.execute(_MIGRATION_TABLE)
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
            batch, self._queue = _take_group(self._queue)
            try:
                results = await self._commit([item for item, _ in batch])
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
        order = sorted(range(len(items)), key=lambda i: (items[i].source, items[i].event_id))
        first: dict[tuple[str, str], int] = {}
        take: list[int] = []
        over: list[int] = []
        async with self._conn() as conn, self._ingest_transaction(conn):
            spool_bytes, spool_events = await self._spool_totals(conn)
            add_bytes = add_events = 0
            for i in order:
                ev = items[i]
                key = (ev.source, ev.event_id)
                if key in first:
                    continue  # a second copy in this group: answered like the first
                first[key] = i
                if (
                    spool_bytes + add_bytes + len(ev.body) > self.max_spool_bytes
                    or spool_events + add_events + 1 > self.max_spool_events
                ):
                    over.append(i)
                    continue
                take.append(i)
                if ev.sinks:
                    add_bytes += len(ev.body)
                    add_events += 1
            # Near the quota this counts every candidate as new, so a group holding
            # duplicates may refuse a little early; the sender retries after Retry-After.
            seqs = await self._store_group(conn, [items[i] for i in take])
            held = await self._held(conn, [items[i] for i in over])
        self._commits += 1
        decided: dict[tuple[str, str], IngestResult] = {}
        for i in take:
            key = (items[i].source, items[i].event_id)
            seq = seqs.get(key)
            decided[key] = (
                IngestResult(IngestOutcome.ACCEPTED, seq)
                if seq is not None
                else IngestResult(IngestOutcome.DUPLICATE)
            )
        for i in over:
            key = (items[i].source, items[i].event_id)
            decided[key] = IngestResult(
                IngestOutcome.DUPLICATE if key in held else IngestOutcome.QUOTA
            )
        results: list[IngestResult] = []
        for i, ev in enumerate(items):
            key = (ev.source, ev.event_id)
            result = decided[key]
            if first[key] != i and result.outcome is IngestOutcome.ACCEPTED:
                result = IngestResult(IngestOutcome.DUPLICATE)
            results.append(result)
        return results

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
        cur = await conn.execute(_STORE_GROUP, params)
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
            await cur.execute(_CLAIM, params)
            rows = await cur.fetchall()
        return [Claimed(int(r[0]), int(r[1]), _event(r[2:])) for r in rows]

    async def pending_summary(self, sink: str, *, now: float) -> PendingSummary:
        """Due rows (counted up to 10,000) and, when none is due, the next due time."""
        async with self._conn() as conn:
            cur = await conn.execute(
                "SELECT count(*), min(received_at) FROM ("
                " SELECT e.received_at FROM outbox o JOIN events e ON e.seq = o.event_seq"
                " WHERE o.sink = %(sink)s AND o.state = 'pending'"
                " AND o.next_attempt_at <= %(now)s AND o.lease_until <= %(now)s"
                " ORDER BY o.id LIMIT %(cap)s) due",
                {"sink": sink, "now": now, "cap": _DUE_CAP},
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
                f" lease_until = 0, dead_at = NULL WHERE {clause}",
                (now, *args),
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
