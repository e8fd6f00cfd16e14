"""Cursor, lease and dead-letter operations of the SQLite store.

Each function runs on one connection, on the thread the store gives it (writes on
the writer thread, reads on the reader thread), inside the transaction it opens.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from receiver.errors import CursorMissingError, DeadLetterBudgetError, LeaseLostError
from receiver.routing import matcher
from receiver.store._choose import choose, resume
from receiver.store._sqlite_sql import EVENT_COLS
from receiver.store.base import (
    DeadLetter,
    Filling,
    Lease,
    LogBatch,
    Progress,
    Requeued,
    RequeueSettlement,
    Route,
    event_from_row,
)

__all__ = [
    "acquire",
    "advance",
    "dead_letters",
    "ensure_cursors",
    "purge_dead",
    "read",
    "release_body_if_free",
    "renew",
    "requeue_dead",
    "requeued",
    "retire_sink",
    "settle_requeued",
]

_SCAN_FACTOR = 4  # a filtered read looks at up to this many rows per wanted event
_ERROR_MAX = 500


def marks(n: int) -> str:
    return ",".join("?" * n)


def _tx(db: sqlite3.Connection, fn: Callable[[], Any]) -> Any:
    db.execute("BEGIN IMMEDIATE")
    try:
        result = fn()
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return result


def head(db: sqlite3.Connection) -> int:
    (seq,) = db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
    return int(seq)


def ensure_cursors(db: sqlite3.Connection, routes: Sequence[Route]) -> None:
    def run() -> None:
        end = head(db)
        db.executemany(
            "INSERT INTO cursors (sink, seq, routes) VALUES (?, ?, ?)"
            " ON CONFLICT (sink) DO UPDATE SET routes = excluded.routes",
            [(r.sink, end, json.dumps(list(r.patterns))) for r in routes],
        )

    _tx(db, run)


def acquire(
    db: sqlite3.Connection, sink: str, owner: str, lease_seconds: float, now: float, create: bool
) -> Lease | None:
    def run() -> Lease | None:
        if create:
            # A cursor nobody created (ensure_cursors does, at start, at the end of the
            # log) starts at the oldest event still held: an embedding that stored events
            # before it started a dispatcher gets them all.
            db.execute(
                "INSERT INTO cursors (sink, seq) SELECT ?, value FROM meta"
                " WHERE key = 'released_upto' ON CONFLICT (sink) DO NOTHING",
                (sink,),
            )
        elif db.execute("SELECT 1 FROM cursors WHERE sink = ?", (sink,)).fetchone() is None:
            raise CursorMissingError(sink)
        row = db.execute(
            "UPDATE cursors SET owner = ?, fence = fence + 1, lease_until = ?"
            " WHERE sink = ? AND (owner IS NULL OR owner = ? OR lease_until < ?)"
            " RETURNING fence, seq, attempts, next_attempt_at, last_error",
            (owner, now + lease_seconds, sink, owner, now),
        ).fetchone()
        if row is None:
            return None
        return Lease(sink, owner, int(row[0]), (0, int(row[1])), int(row[2]), row[3], row[4])

    result: Lease | None = _tx(db, run)
    return result


def renew(db: sqlite3.Connection, lease: Lease, lease_seconds: float, now: float) -> bool:
    cur = db.execute(
        "UPDATE cursors SET lease_until = ? WHERE sink = ? AND owner = ? AND fence = ?",
        (now + lease_seconds, lease.sink, lease.owner, lease.fence),
    )
    return cur.rowcount == 1


def release_lease(db: sqlite3.Connection, lease: Lease) -> None:
    db.execute(
        "UPDATE cursors SET owner = NULL, lease_until = 0"
        " WHERE sink = ? AND owner = ? AND fence = ?",
        (lease.sink, lease.owner, lease.fence),
    )


def read(
    db: sqlite3.Connection,
    lease: Lease,
    route: Route,
    limit: int,
    max_bytes: int,
    fill_wait: float = 0.0,
    now: float = 0.0,
    filling: Filling | None = None,
) -> LogBatch:
    cursor = lease.position[1]
    end = head(db)  # first: anything committed later has a larger seq (one writer)
    match = matcher(route.patterns)
    scan = limit if match is None else max(limit * _SCAN_FACTOR, 2000)
    # The done set is nearly always empty: probe it per row only when it is not.
    done = db.execute("SELECT 1 FROM cursor_done WHERE sink = ? LIMIT 1", (lease.sink,))
    skip_done = (
        " AND NOT EXISTS (SELECT 1 FROM cursor_done d WHERE d.sink = ? AND d.seq = e.seq)"
        if done.fetchone()
        else " AND ? IS NOT NULL"  # keeps the parameters the same
    )
    light_sql = (
        "SELECT 0, seq, event_type, size, received_at FROM events e WHERE seq > ? AND seq <= ?"
        f" AND body IS NOT NULL{skip_done} ORDER BY seq LIMIT ?"
    )
    if filling is not None and fill_wait > 0 and filling.base == lease.position:
        rows = db.execute(light_sql, (filling.scanned_to[1], end, lease.sink, scan)).fetchall()
        held = resume(
            filling, rows, match, limit=limit, max_bytes=max_bytes, end=(0, end), scan=scan
        )
        if held is not None and held.first_at + fill_wait > now:
            return LogBatch(
                (), (), lease.position, ready_at=held.first_at + fill_wait, filling=held
            )
        fill_wait = 0.0  # full or old enough: it goes, read whole from the cursor
    rows = db.execute(light_sql, (cursor, end, lease.sink, scan)).fetchall()
    pick = choose(rows, match, limit=limit, max_bytes=max_bytes, end=(0, end), scan=scan)
    chosen = [seq for _, seq in pick.chosen]
    if not chosen:
        return LogBatch((), (), (0, max(cursor, pick.scanned_to[1])), pick.more)
    if fill_wait > 0 and not pick.full and pick.first_at + fill_wait > now:
        return LogBatch(
            (),
            (),
            lease.position,
            ready_at=pick.first_at + fill_wait,
            filling=pick.filling(lease.position),
        )
    if chosen[-1] - chosen[0] + 1 == len(chosen):  # a run of seqs: a range scan, no list
        loaded = db.execute(
            f"SELECT {EVENT_COLS} FROM events e WHERE e.seq >= ? AND e.seq <= ? ORDER BY e.seq",
            (chosen[0], chosen[-1]),
        ).fetchall()
    else:
        loaded = db.execute(
            f"SELECT {EVENT_COLS} FROM events e WHERE e.seq IN ({marks(len(chosen))})"
            " ORDER BY e.seq",
            chosen,
        ).fetchall()
    events = tuple(event_from_row(r) for r in loaded)
    scanned_to = (0, max(cursor, pick.scanned_to[1]))
    return LogBatch(events, tuple((0, e.seq) for e in events), scanned_to, pick.more)


def _check_lease(db: sqlite3.Connection, lease: Lease) -> None:
    row = db.execute(
        "SELECT 1 FROM cursors WHERE sink = ? AND owner = ? AND fence = ?",
        (lease.sink, lease.owner, lease.fence),
    ).fetchone()
    if row is None:
        raise LeaseLostError(f"the lease on sink {lease.sink!r} is no longer ours")


def _dead_fits(db: sqlite3.Connection, seqs: Sequence[int], max_dead_bytes: int) -> None:
    (held,) = db.execute("SELECT coalesce(sum(size), 0) FROM dead_letters").fetchone()
    (adding,) = db.execute(
        f"SELECT coalesce(sum(size), 0) FROM events WHERE seq IN ({marks(len(seqs))})", seqs
    ).fetchone()
    if held + adding > max_dead_bytes:
        raise DeadLetterBudgetError(
            f"dead letters hold {held} bytes; {adding} more would pass"
            f" store.max_dead_letter_bytes ({max_dead_bytes}): retry or purge dead letters"
        )


def advance(
    db: sqlite3.Connection, lease: Lease, progress: Progress, now: float, max_dead_bytes: int
) -> Lease:
    def run() -> Lease:
        _check_lease(db, lease)
        if progress.dead:
            _dead_fits(db, [d.seq for d in progress.dead], max_dead_bytes)
            db.executemany(
                "INSERT INTO dead_letters (sink, seq, size, attempts, dead_at, error)"
                " SELECT ?, seq, size, ?, ?, ? FROM events WHERE seq = ?"
                " ON CONFLICT (sink, seq) DO UPDATE SET state = 'dead',"
                " attempts = excluded.attempts, dead_at = excluded.dead_at,"
                " error = excluded.error, requeued_at = NULL",
                [(lease.sink, d.attempts, now, d.error[:_ERROR_MAX], d.seq) for d in progress.dead],
            )
        position = progress.position[1]
        done = [(lease.sink, p[1]) for p in progress.done if p[1] > position]
        if done:
            db.executemany("INSERT OR IGNORE INTO cursor_done (sink, seq) VALUES (?, ?)", done)
        db.execute(
            "UPDATE cursors SET seq = max(seq, ?), attempts = ?, next_attempt_at = ?,"
            " last_error = ? WHERE sink = ?",
            (
                position,
                progress.attempts,
                progress.next_attempt_at,
                None if progress.last_error is None else progress.last_error[:_ERROR_MAX],
                lease.sink,
            ),
        )
        if position > lease.position[1]:
            db.execute(
                "DELETE FROM cursor_done WHERE sink = ? AND seq <= ?", (lease.sink, position)
            )
        return Lease(
            lease.sink,
            lease.owner,
            lease.fence,
            (0, max(position, lease.position[1])),
            progress.attempts,
            progress.next_attempt_at,
            progress.last_error,
        )

    result: Lease = _tx(db, run)
    return result


def requeued(
    db: sqlite3.Connection, sink: str, now: float, limit: int, max_bytes: int
) -> list[Requeued]:
    rows = db.execute(
        f"SELECT d.id, d.attempts, d.requeued_at, {EVENT_COLS} FROM dead_letters d"
        " JOIN events e ON e.seq = d.seq WHERE d.sink = ? AND d.state = 'requeued'"
        " AND d.next_attempt_at <= ? ORDER BY d.seq LIMIT ?",
        (sink, now, limit),
    ).fetchall()
    out: list[Requeued] = []
    size = 0
    for r in rows:
        size += len(r[12])
        if out and size > max_bytes:
            break
        out.append(Requeued(int(r[0]), int(r[1]), float(r[2] or 0.0), event_from_row(r[3:])))
    return out


def release_body_if_free(db: sqlite3.Connection, seqs: Sequence[int]) -> None:
    """Drop the bodies of these events if no cursor nor dead letter needs them."""
    if not seqs:
        return
    db.execute(
        "UPDATE events SET body = NULL WHERE body IS NOT NULL"
        f" AND seq IN ({marks(len(seqs))})"
        " AND seq <= (SELECT value FROM meta WHERE key = 'released_upto')"
        " AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.seq = events.seq)",
        list(seqs),
    )


def settle_requeued(
    db: sqlite3.Connection, lease: Lease, settled: RequeueSettlement, now: float
) -> None:
    def run() -> None:
        _check_lease(db, lease)
        gone = [int(i) for i in settled.delivered]
        seqs: list[int] = []
        if gone:
            seqs = [
                r[0]
                for r in db.execute(
                    f"DELETE FROM dead_letters WHERE id IN ({marks(len(gone))}) RETURNING seq",
                    gone,
                )
            ]
        db.executemany(
            "UPDATE dead_letters SET attempts = attempts + ?, next_attempt_at = ?, error = ?"
            " WHERE id = ? AND state = 'requeued'",
            [(int(charge), at, err[:_ERROR_MAX], i) for i, at, err, charge in settled.retry],
        )
        db.executemany(
            "UPDATE dead_letters SET state = 'dead', attempts = attempts + 1, dead_at = ?,"
            " error = ? WHERE id = ?",
            [(now, err[:_ERROR_MAX], i) for i, err in settled.dead],
        )
        release_body_if_free(db, seqs)

    _tx(db, run)


def retire_sink(db: sqlite3.Connection, sink: str, reason: str, now: float) -> int:
    def run() -> int:
        row = db.execute("SELECT seq, routes FROM cursors WHERE sink = ?", (sink,)).fetchone()
        if row is None:
            return 0
        match = matcher(json.loads(row[1]))
        todo = [
            (seq, size)
            for seq, event_type, size in db.execute(
                "SELECT seq, event_type, size FROM events e WHERE seq > ? AND body IS NOT NULL"
                " AND NOT EXISTS (SELECT 1 FROM cursor_done d WHERE d.sink = ? AND d.seq = e.seq)",
                (row[0], sink),
            )
            if match is None or match(event_type)
        ]
        db.executemany(
            "INSERT OR IGNORE INTO dead_letters (sink, seq, size, dead_at, error)"
            " VALUES (?, ?, ?, ?, ?)",
            [(sink, seq, size, now, reason[:_ERROR_MAX]) for seq, size in todo],
        )
        db.execute("DELETE FROM cursor_done WHERE sink = ?", (sink,))
        db.execute("DELETE FROM cursors WHERE sink = ?", (sink,))
        return len(todo)

    count: int = _tx(db, run)
    return count


def where_dead(
    sink: str | None, ids: Sequence[int] | None, table: str = ""
) -> tuple[str, list[Any]]:
    t = f"{table}." if table else ""
    clause, args = "1 = 1", list[Any]()
    if sink is not None:
        clause += f" AND {t}sink = ?"
        args.append(sink)
    if ids is not None:
        clause += f" AND {t}id IN ({marks(len(ids))})"
        args.extend(ids)
    return clause, args


def dead_letters(
    db: sqlite3.Connection, sink: str | None, limit: int, after_id: int, state: str
) -> list[DeadLetter]:
    clause, args = where_dead(sink, None, "d")
    if state != "all":
        clause += " AND d.state = ?"
        args.append(state)
    rows = db.execute(
        "SELECT d.id, d.sink, e.event_id, e.event_type, e.received_at, d.attempts,"
        " d.dead_at, d.error, d.state FROM dead_letters d JOIN events e ON e.seq = d.seq"
        f" WHERE {clause} AND d.id > ? ORDER BY d.id LIMIT ?",
        (*args, after_id, limit),
    ).fetchall()
    return [DeadLetter(*r) for r in rows]


def requeue_dead(
    db: sqlite3.Connection, sink: str | None, ids: Sequence[int] | None, now: float
) -> int:
    clause, args = where_dead(sink, ids)

    def run() -> int:
        cur = db.execute(
            "UPDATE dead_letters SET state = 'requeued', attempts = 0, next_attempt_at = ?,"
            f" requeued_at = ? WHERE state = 'dead' AND {clause}",
            (now, now, *args),
        )
        return cur.rowcount

    count: int = _tx(db, run)
    return count


def purge_dead(db: sqlite3.Connection, sink: str | None, ids: Sequence[int] | None) -> int:
    clause, args = where_dead(sink, ids)

    def run() -> int:
        seqs = [
            r[0] for r in db.execute(f"DELETE FROM dead_letters WHERE {clause} RETURNING seq", args)
        ]
        release_body_if_free(db, seqs)
        return len(seqs)

    count: int = _tx(db, run)
    return count
