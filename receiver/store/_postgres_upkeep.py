"""Upkeep of the PostgreSQL store: body release, pruning, statistics, the readiness write.

Release moves ``released_upto`` towards the slowest cursor in batches of ``BATCH``
log rows, one short transaction each; one replica at a time does it (a transaction
advisory lock, tried, never waited for). Pruning deletes in batches that skip rows
another replica is deleting, so replicas can prune side by side.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import TYPE_CHECKING

import psycopg
from psycopg.rows import TupleRow

from receiver.errors import StoreError
from receiver.routing import matcher
from receiver.store.base import Position, SinkStats, StoreStats

if TYPE_CHECKING:
    from receiver.store.postgres import PostgresStore

__all__ = ["BATCH", "Upkeep"]

Conn = psycopg.AsyncConnection[TupleRow]

BATCH = 1000
_PRUNE_BATCH = 5000
_PRUNE_ROUNDS = 200  # at most 1M events per prune call; the next call continues
_PENDING_COUNT_MAX = 1_000_000
_PROBE = os.urandom(4096)
_RELEASE_LOCK = "SELECT pg_try_advisory_xact_lock(hashtext(coalesce(current_schema(), '') || '.bighub_siem.release'))"


class Upkeep:
    def __init__(self, store: PostgresStore) -> None:
        self.store = store

    async def release(self) -> int:
        total = 0
        while True:
            async with self.store.work() as conn:
                freed = await self._release_batch(conn)
            if freed is None:
                return total
            total += freed
            await asyncio.sleep(0)

    async def _release_batch(self, conn: Conn) -> int | None:
        cur = await conn.execute(_RELEASE_LOCK)
        row = await cur.fetchone()
        if row is None or not row[0]:
            return None  # another replica is releasing
        # The row lock orders release against a purge or a delivered re-queue, which
        # free a dead letter's body only at or below released_upto (release_body_if_free).
        cur = await conn.execute("SELECT xid, seq FROM meta WHERE key = 'released_upto' FOR UPDATE")
        row = await cur.fetchone()
        upto: Position = (int(row[0]), int(row[1])) if row is not None else (0, 0)
        cur = await conn.execute("SELECT xid, seq FROM cursors ORDER BY xid, seq LIMIT 1")
        row = await cur.fetchone()
        if row is None or (int(row[0]), int(row[1])) <= upto:
            return None
        slowest: Position = (int(row[0]), int(row[1]))
        cur = await conn.execute(
            "SELECT xid, seq FROM events WHERE (xid, seq) > (%s, %s) AND (xid, seq) <= (%s, %s)"
            " ORDER BY xid, seq OFFSET %s LIMIT 1",
            (*upto, *slowest, BATCH - 1),
        )
        row = await cur.fetchone()
        end: Position = slowest if row is None else (int(row[0]), int(row[1]))
        cur = await conn.execute(
            "SELECT coalesce(sum(size), 0)::bigint, count(*) FROM events"
            " WHERE (xid, seq) > (%s, %s) AND (xid, seq) <= (%s, %s) AND body IS NOT NULL",
            (*upto, *end),
        )
        row = await cur.fetchone()
        freed_bytes, freed = (int(row[0]), int(row[1])) if row is not None else (0, 0)
        # Dead letters keep their bodies; they are counted against their own limit.
        await conn.execute(
            "UPDATE events e SET body = NULL WHERE (xid, seq) > (%s, %s)"
            " AND (xid, seq) <= (%s, %s) AND body IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.seq = e.seq)",
            (*upto, *end),
        )
        await self.store.count(conn, -freed_bytes, -freed)
        await conn.execute("UPDATE meta SET xid = %s, seq = %s WHERE key = 'released_upto'", end)
        return freed

    async def prune(self, *, now: float) -> int:
        cutoff = now - self.store.dedup_window_seconds
        pruned = 0
        async with self.store.conn() as conn:
            for _ in range(_PRUNE_ROUNDS):
                cur = await conn.execute(
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events"
                    " WHERE body IS NULL AND received_at < %s LIMIT %s FOR UPDATE SKIP LOCKED)",
                    (cutoff, _PRUNE_BATCH),
                )
                pruned += cur.rowcount
                if cur.rowcount < _PRUNE_BATCH:
                    break
                await asyncio.sleep(0)
            await conn.execute("DELETE FROM replays WHERE requested_at < %s", (cutoff,))
        return pruned

    async def stats(self) -> StoreStats:
        async with self.store.conn() as conn:
            spool_bytes, spool_events = await self.store.spool_totals(conn)
            cur = await conn.execute(
                "SELECT (SELECT count(*) FROM events),"
                " (SELECT coalesce(sum(size), 0)::bigint FROM dead_letters),"
                " (SELECT count(*) FROM dead_letters)"
            )
            row = await cur.fetchone()
            held, dead_bytes, dead_events = (int(x) for x in row) if row else (0, 0, 0)
            cur = await conn.execute(
                "SELECT sink, count(*) FROM dead_letters WHERE state = 'dead' GROUP BY sink"
            )
            dead = {r[0]: int(r[1]) for r in await cur.fetchall()}
            cur = await conn.execute("SELECT sink, xid, seq, routes, attempts FROM cursors")
            per: dict[str, SinkStats] = {}
            for sink, xid, seq, routes, attempts in await cur.fetchall():
                c = await conn.execute(
                    "SELECT count(*) FROM (SELECT 1 FROM events WHERE (xid, seq) > (%s, %s)"
                    " AND body IS NOT NULL LIMIT %s) t",
                    (xid, seq, _PENDING_COUNT_MAX),
                )
                r = await c.fetchone()
                pending = int(r[0]) if r is not None else 0
                oldest = await _oldest(conn, sink, (xid, seq), routes) if pending else None
                per[sink] = SinkStats(pending, dead.pop(sink, 0), oldest, int(attempts))
            for sink, n in dead.items():
                per[sink] = SinkStats(0, n)
        return StoreStats(
            spool_bytes,
            spool_events,
            held,
            per,
            self.store.commits,
            dead_bytes,
            dead_events,
        )

    async def writable(self) -> bool:
        """A real durable write (synchronous commit), on a primary that takes writes."""
        try:
            async with self.store.conn(timeout=2.0) as conn, conn.transaction():
                await conn.execute("SET LOCAL synchronous_commit = on")
                await conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('probe', %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (_PROBE,),
                )
        except StoreError:
            return False
        return True


async def _oldest(conn: Conn, sink: str, cursor: tuple[int, int], routes: str) -> float | None:
    match = matcher(json.loads(routes))
    cur = await conn.execute(
        "SELECT event_type, received_at FROM events e WHERE (xid, seq) > (%s, %s)"
        " AND body IS NOT NULL AND NOT EXISTS"
        " (SELECT 1 FROM cursor_done d WHERE d.sink = %s AND d.seq = e.seq)"
        " ORDER BY xid, seq LIMIT 10000",
        (*cursor, sink),
    )
    for event_type, received_at in await cur.fetchall():
        if match is None or match(event_type):
            return float(received_at)
    return None
