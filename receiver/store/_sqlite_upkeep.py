"""Upkeep of the SQLite store: body release, pruning, statistics, the readiness write.

Release and prune run in batches of ``BATCH`` rows, each its own transaction and its
own job on the writer thread: ingest groups queue behind at most one batch (a few
milliseconds), never behind the whole backlog.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from typing import TYPE_CHECKING

from receiver.routing import matcher
from receiver.store.base import SinkStats, StoreStats

if TYPE_CHECKING:
    from receiver.store.sqlite import SQLiteStore

__all__ = ["BATCH", "Upkeep"]

BATCH = 1000
_PENDING_COUNT_MAX = 1_000_000  # per-sink lag is counted up to this many events
_PROBE = os.urandom(4096)  # written by the readiness check: a page's worth of data


class Upkeep:
    def __init__(self, store: SQLiteStore) -> None:
        self.store = store

    async def release(self) -> int:
        """Move ``released_upto`` up to the slowest cursor, releasing bodies as it goes."""
        total = 0
        while True:
            freed = await self.store.work(self._release_batch)
            if freed is None:
                return total
            total += freed
            await asyncio.sleep(0)  # let an ingest group in between batches

    def _release_batch(self, db: sqlite3.Connection) -> int | None:
        db.execute("BEGIN IMMEDIATE")
        try:
            (upto,) = db.execute("SELECT value FROM meta WHERE key = 'released_upto'").fetchone()
            (slowest,) = db.execute("SELECT min(seq) FROM cursors").fetchone()
            if slowest is None or slowest <= upto:
                db.execute("ROLLBACK")
                return None
            row = db.execute(
                "SELECT seq FROM events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT 1 OFFSET ?",
                (upto, slowest, BATCH - 1),
            ).fetchone()
            end = slowest if row is None else int(row[0])
            freed_bytes, freed = db.execute(
                "SELECT coalesce(sum(size), 0), count(*) FROM events"
                " WHERE seq > ? AND seq <= ? AND body IS NOT NULL",
                (upto, end),
            ).fetchone()
            # Dead letters keep their bodies; they are counted against their own limit.
            db.execute(
                "UPDATE events SET body = NULL WHERE seq > ? AND seq <= ? AND body IS NOT NULL"
                " AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.seq = events.seq)",
                (upto, end),
            )
            db.execute("UPDATE meta SET value = ? WHERE key = 'released_upto'", (end,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self.store.uncount(int(freed_bytes), int(freed))  # after the commit
        return int(freed)

    async def prune(self, *, now: float) -> int:
        cutoff = now - self.store.dedup_window_seconds
        total = 0
        while True:
            n = await self.store.work(lambda db: self._prune_batch(db, cutoff))
            total += n
            if n < BATCH:
                break
            await asyncio.sleep(0)
        await self.store.work(
            lambda db: db.execute("DELETE FROM replays WHERE requested_at < ?", (cutoff,))
        )
        return total

    @staticmethod
    def _prune_batch(db: sqlite3.Connection, cutoff: float) -> int:
        # Only events no cursor and no dead letter needs (body released) are forgotten.
        cur = db.execute(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events"
            " WHERE body IS NULL AND received_at < ? LIMIT ?)",
            (cutoff, BATCH),
        )
        return cur.rowcount

    async def stats(self) -> StoreStats:
        def run(db: sqlite3.Connection) -> StoreStats:
            (held,) = db.execute("SELECT count(*) FROM events").fetchone()
            dead_bytes, dead_events = db.execute(
                "SELECT coalesce(sum(size), 0), count(*) FROM dead_letters"
            ).fetchone()
            dead = dict(
                db.execute(
                    "SELECT sink, count(*) FROM dead_letters WHERE state = 'dead' GROUP BY sink"
                )
            )
            per: dict[str, SinkStats] = {}
            for sink, seq, routes, attempts in db.execute(
                "SELECT sink, seq, routes, attempts FROM cursors"
            ).fetchall():
                (pending,) = db.execute(
                    "SELECT count(*) FROM (SELECT 1 FROM events WHERE seq > ?"
                    " AND body IS NOT NULL LIMIT ?)",
                    (seq, _PENDING_COUNT_MAX),
                ).fetchone()
                per[sink] = SinkStats(
                    int(pending),
                    int(dead.pop(sink, 0)),
                    _oldest(db, sink, seq, routes) if pending else None,
                    int(attempts),
                )
            for sink, n in dead.items():  # dead letters of a sink that has no cursor now
                per[sink] = SinkStats(0, int(n))
            spool_bytes, spool_events = self.store.spool
            return StoreStats(
                spool_bytes,
                spool_events,
                int(held),
                per,
                self.store.commits,
                int(dead_bytes),
                int(dead_events),
            )

        return await self.store.look(run)

    async def writable(self) -> bool:
        """A real durable write through the writer thread, and free disk for more."""

        def probe(db: sqlite3.Connection) -> None:
            self.store.synchronous(db, "FULL")  # as an ingest commit does
            try:
                db.execute("BEGIN IMMEDIATE")
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('probe', ?)", (_PROBE,)
                )
                db.execute("COMMIT")
            finally:
                if db.in_transaction:
                    db.execute("ROLLBACK")

        try:
            await self.store.work(probe)
            free = os.statvfs(self.store.path.parent)
        except Exception:
            return False
        return free.f_bavail * free.f_frsize >= self.store.min_free_bytes


def _oldest(db: sqlite3.Connection, sink: str, seq: int, routes: str) -> float | None:
    """Receipt time of the first event after the cursor that the sink's routes take."""
    match = matcher(json.loads(routes))
    for event_type, received_at in db.execute(
        "SELECT event_type, received_at FROM events e WHERE seq > ? AND body IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM cursor_done d WHERE d.sink = ? AND d.seq = e.seq)"
        " ORDER BY seq LIMIT 10000",
        (seq, sink),
    ):
        if match is None or match(event_type):
            return float(received_at)
    return None
