"""The shared store: PostgreSQL through psycopg 3 (async, pooled).

Any number of receiver processes (ingress and dispatch replicas) use one database.

- *ingest*: the shared group-commit engine (``_commit``) queues requests; each group is
  one statement, so one transaction: the event rows and the spool counters. Two
  writer tasks per process let the next group commit while one is in flight. The
  answer goes out only after the commit returned, with ``synchronous_commit`` at
  least ``on`` (WAL flushed). A group is inserted in (source, event id) order, so two
  replicas writing the same events lock them in the same order and cannot deadlock.
  A group the database refuses for its data (a character the database encoding
  cannot hold) is split in halves and retried, so only the offending event fails.
- *log order* is ``(xid, seq)`` and readers see only rows below the snapshot's
  ``xmin`` (see ``_postgres_sql``): a cursor never passes a row that may still commit.
- *dispatch*: one dispatcher at a time holds a sink's cursor lease (owner token and
  fencing number, timed by the database's clock); every cursor write checks them in
  the same transaction. Cursor writes commit with ``synchronous_commit = off``: one
  lost in a database crash means the events are sent again, never lost.
- *upkeep*: body release and pruning work in small batches; one replica at a time
  releases (an advisory lock), any may prune (``SKIP LOCKED``).
- *quota*: bytes / events some cursor has not passed are kept in ``spool_counters``,
  updated in the same transactions that change them and spread over a few rows to
  avoid one hot row lock. Replicas committing at the same instant can together
  overshoot the quota by at most one group each.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from receiver.errors import EventRefusedError, StoreError
from receiver.store import _group
from receiver.store import _postgres_cursors as ops
from receiver.store._commit import Admission, GroupCommitter
from receiver.store._migrations import pending
from receiver.store._postgres_sql import (
    COUNTER_SLOTS,
    MIGRATION_TABLE,
    MIGRATIONS,
    STORE_GROUP,
)
from receiver.store._postgres_upkeep import Upkeep
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

__all__ = ["PostgresStore"]

Conn = psycopg.AsyncConnection[TupleRow]
T = TypeVar("T")

_WRITERS = 2  # groups committing at once per process
_CONNECT_TIMEOUT = 10.0  # seconds to get a connection before answering "unavailable"


def describe(exc: psycopg.Error) -> str:
    # The first line names the failure; later lines (DETAIL) may quote row values.
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"postgresql: {type(exc).__name__}: {first}"[:300]


async def _configure(conn: Conn) -> None:
    # Readers see only rows below the oldest running transaction (see _postgres_sql):
    # none of ours may hold that back by idling inside a transaction (a partition in the
    # middle of a group commit, say). Ours last milliseconds; this is the backstop.
    await conn.execute("SET idle_in_transaction_session_timeout = '60s'")


class PostgresStore:
    """The multi-replica store. See the module docstring for its rules."""

    shared: bool = True  # other replicas hold live leases

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        dedup_window_seconds: float = 7 * 86400,
        max_spool_bytes: int = 1024**3,
        max_spool_events: int = 1_000_000,
        max_dead_letter_bytes: int = 1024**3,
        admission: Admission | None = None,
        pool_max_size: int = 10,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = url
        self._password = password
        self.dedup_window_seconds = dedup_window_seconds
        self.max_spool_bytes = max_spool_bytes
        self.max_spool_events = max_spool_events
        self.max_dead_letter_bytes = max_dead_letter_bytes
        self.clock = clock
        self._pool_max_size = pool_max_size
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._committer = GroupCommitter(self._commit, writers=_WRITERS, admission=admission)
        self._force_sync = False
        self._rng = random.Random()
        self.upkeep = Upkeep(self)
        self.migrated: SchemaVersion | None = None

    # -- plumbing -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def conn(self, timeout: float = _CONNECT_TIMEOUT) -> AsyncIterator[Conn]:
        """A pooled connection (autocommit); every psycopg error becomes a StoreError."""
        pool = self._pool
        if pool is None:
            raise StoreError("store is not open")
        try:
            async with pool.connection(timeout=timeout) as conn:
                yield conn
        except psycopg.Error as exc:
            raise StoreError(describe(exc)) from exc

    @contextlib.asynccontextmanager
    async def work(self) -> AsyncIterator[Conn]:
        """A transaction whose loss in a crash only means a re-send (see module doc)."""
        async with self.conn() as conn, conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit = off")
            yield conn

    async def _in_work(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        async with self.work() as conn:
            return await fn(conn)

    async def _in_conn(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        async with self.conn() as conn:
            return await fn(conn)

    async def open(self) -> None:
        # UTF-8 whatever the database's encoding: a character it cannot hold is then
        # refused by the server for that event, not by the driver for the whole group.
        kwargs: dict[str, Any] = {"autocommit": True, "client_encoding": "utf8"}
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
            configure=_configure,
        )
        try:
            await pool.open(wait=True, timeout=_CONNECT_TIMEOUT)
        except psycopg.Error as exc:
            await pool.close()
            raise StoreError(describe(exc)) from exc
        self._pool = pool
        try:
            self.migrated = await self._migrate()
            async with self.conn() as conn:
                cur = await conn.execute("SHOW synchronous_commit")
                row = await cur.fetchone()
            # "off" on the server would answer 2xx before the WAL flush: raise it for ingest.
            self._force_sync = row is not None and row[0] == "off"
        except BaseException:
            await self.close()
            raise
        self._committer.start()

    async def _migrate(self) -> SchemaVersion:
        # Transactional DDL: every missing migration and its record commit together.
        # Replicas starting together take turns on an advisory lock held until commit.
        async with self.conn() as conn, conn.transaction():
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
        await self._committer.close()
        if self._pool is not None:
            await self._pool.close(timeout=5.0)
            self._pool = None

    # -- ingest (group commit) --------------------------------------------------------

    async def ingest(
        self, event: NewEvent, *, alive: Callable[[], bool] | None = None
    ) -> IngestResult:
        return await self._committer.submit(event, alive)

    @property
    def commits(self) -> int:
        return self._committer.commits

    async def _commit(self, items: Sequence[NewEvent]) -> list[IngestResult]:
        try:
            return await self._commit_group(items)
        except (psycopg.DataError, UnicodeEncodeError) as exc:
            # The data of some event of the group (the engine splits the group to find it).
            reason = describe(exc) if isinstance(exc, psycopg.Error) else type(exc).__name__
            raise EventRefusedError(reason) from exc
        except psycopg.Error as exc:
            raise StoreError(describe(exc)) from exc

    async def _commit_group(self, items: Sequence[NewEvent]) -> list[IngestResult]:
        pool = self._pool
        if pool is None:
            raise StoreError("store is not open")
        # Not through conn(): a data error must reach _commit as itself.
        async with (
            pool.connection(timeout=_CONNECT_TIMEOUT) as conn,
            self._ingest_transaction(conn),
        ):
            spool_bytes, spool_events = await self.spool_totals(conn)
            p = _group.plan(
                items,
                spool_bytes=spool_bytes,
                spool_events=spool_events,
                max_bytes=self.max_spool_bytes,
                max_events=self.max_spool_events,
            )
            stored = await self._store_group(conn, [items[i] for i in p.take])
            held = await self._held(conn, [items[i] for i in p.over])
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
                ev.body,
            )
            for ev in events
        ]
        params: list[Any] = [list(col) for col in zip(*rows, strict=True)]
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

    async def count(self, conn: Conn, delta_bytes: int, delta_events: int) -> None:
        if delta_bytes or delta_events:
            await conn.execute(
                "UPDATE spool_counters SET bytes = bytes + %s, events = events + %s"
                " WHERE slot = %s",
                (delta_bytes, delta_events, self._rng.randrange(COUNTER_SLOTS)),
            )

    @staticmethod
    async def spool_totals(conn: Conn) -> tuple[int, int]:
        cur = await conn.execute(
            "SELECT coalesce(sum(bytes), 0)::bigint, coalesce(sum(events), 0)::bigint"
            " FROM spool_counters"
        )
        row = await cur.fetchone()
        return (int(row[0]), int(row[1])) if row is not None else (0, 0)

    # -- cursors and dispatch ---------------------------------------------------------

    async def ensure_cursors(self, routes: Sequence[Route]) -> None:
        await self._in_work(lambda c: ops.ensure_cursors(c, routes))

    async def acquire(
        self, sink: str, owner: str, *, lease_seconds: float, create: bool = True
    ) -> Lease | None:
        return await self._in_work(lambda c: ops.acquire(c, sink, owner, lease_seconds, create))

    async def renew(self, lease: Lease, *, lease_seconds: float) -> bool:
        return await self._in_conn(lambda c: ops.renew(c, lease, lease_seconds))

    async def release_lease(self, lease: Lease) -> None:
        await self._in_conn(lambda c: ops.release_lease(c, lease))

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
        return await self._in_conn(
            lambda c: ops.read(c, lease, route, limit, max_bytes, fill_wait, now, filling)
        )

    async def advance(self, lease: Lease, progress: Progress) -> Lease:
        return await self._in_work(
            lambda c: ops.advance(c, lease, progress, self.clock(), self.max_dead_letter_bytes)
        )

    async def requeued(
        self, sink: str, *, now: float, limit: int, max_bytes: int
    ) -> list[Requeued]:
        return await self._in_conn(lambda c: ops.requeued(c, sink, now, limit, max_bytes))

    async def settle_requeued(self, lease: Lease, settlement: RequeueSettlement) -> None:
        await self._in_work(lambda c: ops.settle_requeued(c, lease, settlement, self.clock()))

    async def retire_sink(self, sink: str, reason: str, *, now: float) -> int:
        return await self._in_work(lambda c: ops.retire_sink(c, sink, reason, now))

    async def cursor_sinks(self) -> list[str]:
        async with self.conn() as conn:
            cur = await conn.execute("SELECT sink FROM cursors ORDER BY sink")
            return [r[0] for r in await cur.fetchall()]

    # -- dead letters -----------------------------------------------------------------

    async def dead_letters(
        self,
        *,
        sink: str | None = None,
        limit: int = 100,
        after_id: int = 0,
        state: DeadLetterState = "dead",
    ) -> list[DeadLetter]:
        return await self._in_conn(lambda c: ops.dead_letters(c, sink, limit, after_id, state))

    async def requeue_dead(
        self, *, sink: str | None = None, ids: Sequence[int] | None = None, now: float
    ) -> int:
        return await self._in_conn(lambda c: ops.requeue_dead(c, sink, ids, now))

    async def purge_dead(self, *, sink: str | None = None, ids: Sequence[int] | None = None) -> int:
        async with self.conn() as conn, conn.transaction():
            return await ops.purge_dead(conn, sink, ids)

    # -- queries and upkeep ---------------------------------------------------------------

    async def _exists(self, sql: str, args: Sequence[Any]) -> bool:
        async with self.conn() as conn:
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
        async with self.conn() as conn:
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
        async with self.conn() as conn:
            cur = await conn.execute(
                "SELECT webhook_id, delivery_id, event_id, requested_at, outcome FROM replays"
                " WHERE webhook_id = %s AND requested_at >= %s",
                (webhook_id, since),
            )
            rows = await cur.fetchall()
        return {r[1]: ReplayRecord(r[0], r[1], r[2], r[3], r[4]) for r in rows}

    async def stats(self) -> StoreStats:
        return await self.upkeep.stats()

    async def release(self) -> int:
        return await self.upkeep.release()

    async def prune(self, *, now: float) -> int:
        return await self.upkeep.prune(now=now)

    async def writable(self) -> bool:
        if not self._committer.running:
            return False
        return await self.upkeep.writable()
