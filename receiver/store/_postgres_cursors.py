"""Cursor, lease and dead-letter operations of the PostgreSQL store.

Each function runs on a connection the store hands it, inside a transaction it opens.
Leases are timed by the database's clock (``clock_timestamp()``), never a replica's,
so clock skew between replicas cannot make two of them believe they own a cursor.
Every cursor write first locks the cursor row and checks owner and fence.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from receiver.errors import CursorMissingError, DeadLetterBudgetError, LeaseLostError
from receiver.routing import matcher
from receiver.store._choose import choose, resume
from receiver.store._postgres_sql import EVENT_COLS, HORIZON
from receiver.store.base import (
    DeadLetter,
    Filling,
    Lease,
    LogBatch,
    Position,
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
    "release_lease",
    "renew",
    "requeue_dead",
    "requeued",
    "retire_sink",
    "settle_requeued",
]

Conn = psycopg.AsyncConnection[TupleRow]

_SCAN_FACTOR = 4  # a filtered read looks at up to this many rows per wanted event
_ERROR_MAX = 500
_LEASE_UNTIL = "clock_timestamp() + make_interval(secs => %(lease)s)"


async def _one(conn: Conn, sql: str, args: Any = None) -> tuple[Any, ...] | None:
    cur = await conn.execute(sql, args)
    return await cur.fetchone()


async def horizon(conn: Conn) -> Position:
    row = await _one(conn, HORIZON)
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


async def ensure_cursors(conn: Conn, routes: Sequence[Route]) -> None:
    end = await horizon(conn)
    cur = conn.cursor()
    await cur.executemany(
        "INSERT INTO cursors (sink, xid, seq, routes) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (sink) DO UPDATE SET routes = excluded.routes",
        [(r.sink, end[0], end[1], json.dumps(list(r.patterns))) for r in routes],
    )


async def acquire(
    conn: Conn, sink: str, owner: str, lease_seconds: float, create: bool
) -> Lease | None:
    if create:
        # A cursor nobody created (ensure_cursors does, at start) begins at the oldest
        # event still held: an embedding that stored events first gets them all.
        await conn.execute(
            "INSERT INTO cursors (sink, xid, seq) SELECT %s, xid, seq FROM meta"
            " WHERE key = 'released_upto' ON CONFLICT (sink) DO NOTHING",
            (sink,),
        )
    elif await _one(conn, "SELECT 1 FROM cursors WHERE sink = %s", (sink,)) is None:
        raise CursorMissingError(sink)
    row = await _one(
        conn,
        f"UPDATE cursors SET owner = %(owner)s, fence = fence + 1, lease_until = {_LEASE_UNTIL}"
        " WHERE sink = %(sink)s AND (owner IS NULL OR owner = %(owner)s"
        " OR lease_until < clock_timestamp())"
        " RETURNING fence, xid, seq, attempts, next_attempt_at, last_error",
        {"owner": owner, "sink": sink, "lease": lease_seconds},
    )
    if row is None:
        return None
    return Lease(sink, owner, int(row[0]), (int(row[1]), int(row[2])), int(row[3]), row[4], row[5])


async def renew(conn: Conn, lease: Lease, lease_seconds: float) -> bool:
    cur = await conn.execute(
        f"UPDATE cursors SET lease_until = {_LEASE_UNTIL}"
        " WHERE sink = %(sink)s AND owner = %(owner)s AND fence = %(fence)s",
        {"sink": lease.sink, "owner": lease.owner, "fence": lease.fence, "lease": lease_seconds},
    )
    return cur.rowcount == 1


async def release_lease(conn: Conn, lease: Lease) -> None:
    await conn.execute(
        "UPDATE cursors SET owner = NULL, lease_until = '-infinity'"
        " WHERE sink = %s AND owner = %s AND fence = %s",
        (lease.sink, lease.owner, lease.fence),
    )


async def read(
    conn: Conn,
    lease: Lease,
    route: Route,
    limit: int,
    max_bytes: int,
    fill_wait: float = 0.0,
    now: float = 0.0,
    filling: Filling | None = None,
) -> LogBatch:
    end = await horizon(conn)  # rows up to here are final; later ones sort after them
    cursor = lease.position
    if end <= cursor:
        return LogBatch((), (), cursor)
    match = matcher(route.patterns)
    scan = limit if match is None else max(limit * _SCAN_FACTOR, 2000)
    light_sql = (
        "SELECT xid, seq, event_type, size, received_at FROM events e"
        " WHERE (xid, seq) > (%s, %s) AND (xid, seq) <= (%s, %s) AND body IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM cursor_done d WHERE d.sink = %s AND d.seq = e.seq)"
        " ORDER BY xid, seq LIMIT %s"
    )
    if filling is not None and fill_wait > 0 and filling.base == cursor:
        cur = await conn.execute(light_sql, (*filling.scanned_to, *end, lease.sink, scan))
        rows = await cur.fetchall()
        held = resume(filling, rows, match, limit=limit, max_bytes=max_bytes, end=end, scan=scan)
        if held is not None and held.first_at + fill_wait > now:
            return LogBatch((), (), cursor, ready_at=held.first_at + fill_wait, filling=held)
        fill_wait = 0.0  # full or old enough: it goes, read whole from the cursor
    cur = await conn.execute(light_sql, (*cursor, *end, lease.sink, scan))
    pick = choose(await cur.fetchall(), match, limit=limit, max_bytes=max_bytes, end=end, scan=scan)
    if not pick.chosen:
        return LogBatch((), (), max(cursor, pick.scanned_to), pick.more)
    if fill_wait > 0 and not pick.full and pick.first_at + fill_wait > now:
        return LogBatch(
            (), (), cursor, ready_at=pick.first_at + fill_wait, filling=pick.filling(cursor)
        )
    # Binary results: bodies arrive as bytes instead of hex text twice their size.
    bcur = conn.cursor(binary=True)
    await bcur.execute(
        f"SELECT {EVENT_COLS} FROM events e WHERE e.seq = ANY(%s) ORDER BY e.xid, e.seq",
        ([p[1] for p in pick.chosen],),
    )
    events = tuple(event_from_row(r) for r in await bcur.fetchall())
    return LogBatch(events, tuple(pick.chosen), max(cursor, pick.scanned_to), pick.more)


async def _check_lease(conn: Conn, lease: Lease) -> None:
    row = await _one(
        conn,
        "SELECT 1 FROM cursors WHERE sink = %s AND owner = %s AND fence = %s FOR UPDATE",
        (lease.sink, lease.owner, lease.fence),
    )
    if row is None:
        raise LeaseLostError(f"the lease on sink {lease.sink!r} is no longer ours")


async def _dead_fits(conn: Conn, seqs: Sequence[int], max_dead_bytes: int) -> None:
    row = await _one(
        conn,
        "SELECT (SELECT coalesce(sum(size), 0) FROM dead_letters)::bigint,"
        " (SELECT coalesce(sum(size), 0) FROM events WHERE seq = ANY(%s))::bigint",
        (list(seqs),),
    )
    held, adding = (int(row[0]), int(row[1])) if row is not None else (0, 0)
    if held + adding > max_dead_bytes:
        raise DeadLetterBudgetError(
            f"dead letters hold {held} bytes; {adding} more would pass"
            f" store.max_dead_letter_bytes ({max_dead_bytes}): retry or purge dead letters"
        )


async def advance(
    conn: Conn, lease: Lease, progress: Progress, now: float, max_dead_bytes: int
) -> Lease:
    await _check_lease(conn, lease)
    if progress.dead:
        dead = progress.dead
        await _dead_fits(conn, [d.seq for d in dead], max_dead_bytes)
        await conn.execute(
            "INSERT INTO dead_letters (sink, seq, size, attempts, dead_at, error)"
            " SELECT %s, e.seq, e.size, u.attempts, %s, u.error"
            " FROM unnest(%s::bigint[], %s::int[], %s::text[]) AS u(seq, attempts, error)"
            " JOIN events e ON e.seq = u.seq"
            " ON CONFLICT (sink, seq) DO UPDATE SET state = 'dead',"
            " attempts = excluded.attempts, dead_at = excluded.dead_at,"
            " error = excluded.error, requeued_at = NULL",
            (
                lease.sink,
                now,
                [d.seq for d in dead],
                [d.attempts for d in dead],
                [d.error[:_ERROR_MAX] for d in dead],
            ),
        )
    position = max(progress.position, lease.position)
    done = [p for p in progress.done if p > position]
    if done:
        await conn.execute(
            "INSERT INTO cursor_done (sink, xid, seq)"
            " SELECT %s, u.xid, u.seq FROM unnest(%s::bigint[], %s::bigint[]) AS u(xid, seq)"
            " ON CONFLICT DO NOTHING",
            (lease.sink, [p[0] for p in done], [p[1] for p in done]),
        )
    error = None if progress.last_error is None else progress.last_error[:_ERROR_MAX]
    await conn.execute(
        "UPDATE cursors SET xid = %s, seq = %s, attempts = %s, next_attempt_at = %s,"
        " last_error = %s WHERE sink = %s",
        (*position, progress.attempts, progress.next_attempt_at, error, lease.sink),
    )
    if position > lease.position:
        await conn.execute(
            "DELETE FROM cursor_done WHERE sink = %s AND (xid, seq) <= (%s, %s)",
            (lease.sink, *position),
        )
    return Lease(
        lease.sink,
        lease.owner,
        lease.fence,
        position,
        progress.attempts,
        progress.next_attempt_at,
        progress.last_error,
    )


async def requeued(conn: Conn, sink: str, now: float, limit: int, max_bytes: int) -> list[Requeued]:
    cur = conn.cursor(binary=True)
    await cur.execute(
        f"SELECT d.id, d.attempts, d.requeued_at, {EVENT_COLS} FROM dead_letters d"
        " JOIN events e ON e.seq = d.seq WHERE d.sink = %s AND d.state = 'requeued'"
        " AND d.next_attempt_at <= %s ORDER BY d.seq LIMIT %s",
        (sink, now, limit),
    )
    out: list[Requeued] = []
    size = 0
    for r in await cur.fetchall():
        size += len(r[12])
        if out and size > max_bytes:
            break
        out.append(Requeued(int(r[0]), int(r[1]), float(r[2] or 0.0), event_from_row(r[3:])))
    return out


async def lock_released_upto(conn: Conn) -> None:
    """Taken before a dead letter is deleted: a release running at the same time either
    commits first (its new mark is seen below) or waits and sees the letter gone."""
    await conn.execute("SELECT 1 FROM meta WHERE key = 'released_upto' FOR UPDATE")


async def release_body_if_free(conn: Conn, seqs: Sequence[int]) -> None:
    """Drop these events' bodies if no cursor nor dead letter needs them."""
    if seqs:
        await conn.execute(
            "UPDATE events e SET body = NULL FROM meta m WHERE m.key = 'released_upto'"
            " AND e.body IS NOT NULL AND e.seq = ANY(%s) AND (e.xid, e.seq) <= (m.xid, m.seq)"
            " AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.seq = e.seq)",
            (list(seqs),),
        )


async def settle_requeued(conn: Conn, lease: Lease, settled: RequeueSettlement, now: float) -> None:
    await _check_lease(conn, lease)
    seqs: list[int] = []
    if settled.delivered:
        await lock_released_upto(conn)
        cur = await conn.execute(
            "DELETE FROM dead_letters WHERE id = ANY(%s) RETURNING seq", (list(settled.delivered),)
        )
        seqs = [int(r[0]) for r in await cur.fetchall()]
    if settled.retry:
        await conn.execute(
            "UPDATE dead_letters d SET attempts = d.attempts + u.charge,"
            " next_attempt_at = u.at, error = u.error"
            " FROM unnest(%s::bigint[], %s::int[], %s::float8[], %s::text[])"
            " AS u(id, charge, at, error) WHERE d.id = u.id AND d.state = 'requeued'",
            (
                [r[0] for r in settled.retry],
                [int(r[3]) for r in settled.retry],
                [r[1] for r in settled.retry],
                [r[2][:_ERROR_MAX] for r in settled.retry],
            ),
        )
    if settled.dead:
        await conn.execute(
            "UPDATE dead_letters d SET state = 'dead', attempts = d.attempts + 1,"
            " dead_at = %s, error = u.error FROM unnest(%s::bigint[], %s::text[])"
            " AS u(id, error) WHERE d.id = u.id",
            (now, [d[0] for d in settled.dead], [d[1][:_ERROR_MAX] for d in settled.dead]),
        )
    await release_body_if_free(conn, seqs)


async def retire_sink(conn: Conn, sink: str, reason: str, now: float) -> int:
    row = await _one(
        conn, "SELECT xid, seq, routes FROM cursors WHERE sink = %s FOR UPDATE", (sink,)
    )
    if row is None:
        return 0
    match: Callable[[str], bool] | None = matcher(json.loads(row[2]))
    cur = await conn.execute(
        "SELECT seq, event_type FROM events e WHERE (xid, seq) > (%s, %s) AND body IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM cursor_done d WHERE d.sink = %s AND d.seq = e.seq)",
        (row[0], row[1], sink),
    )
    todo = [
        int(seq) for seq, event_type in await cur.fetchall() if match is None or match(event_type)
    ]
    await conn.execute(
        "INSERT INTO dead_letters (sink, seq, size, dead_at, error)"
        " SELECT %s, e.seq, e.size, %s, %s FROM events e WHERE e.seq = ANY(%s)"
        " ON CONFLICT (sink, seq) DO NOTHING",
        (sink, now, reason[:_ERROR_MAX], todo),
    )
    await conn.execute("DELETE FROM cursor_done WHERE sink = %s", (sink,))
    await conn.execute("DELETE FROM cursors WHERE sink = %s", (sink,))
    return len(todo)


def _where(sink: str | None, ids: Sequence[int] | None, table: str = "") -> tuple[str, list[Any]]:
    t = f"{table}." if table else ""
    clause, args = "TRUE", list[Any]()
    if sink is not None:
        clause += f" AND {t}sink = %s"
        args.append(sink)
    if ids is not None:
        clause += f" AND {t}id = ANY(%s)"
        args.append(list(ids))
    return clause, args


async def dead_letters(
    conn: Conn, sink: str | None, limit: int, after_id: int, state: str
) -> list[DeadLetter]:
    clause, args = _where(sink, None, "d")
    if state != "all":
        clause += " AND d.state = %s"
        args.append(state)
    cur = await conn.execute(
        "SELECT d.id, d.sink, e.event_id, e.event_type, e.received_at, d.attempts,"
        " d.dead_at, d.error, d.state FROM dead_letters d JOIN events e ON e.seq = d.seq"
        f" WHERE {clause} AND d.id > %s ORDER BY d.id LIMIT %s",
        (*args, after_id, limit),
    )
    return [DeadLetter(*r) for r in await cur.fetchall()]


async def requeue_dead(conn: Conn, sink: str | None, ids: Sequence[int] | None, now: float) -> int:
    clause, args = _where(sink, ids)
    cur = await conn.execute(
        "UPDATE dead_letters SET state = 'requeued', attempts = 0, next_attempt_at = %s,"
        f" requeued_at = %s WHERE state = 'dead' AND {clause}",
        (now, now, *args),
    )
    return cur.rowcount


async def purge_dead(conn: Conn, sink: str | None, ids: Sequence[int] | None) -> int:
    clause, args = _where(sink, ids)
    await lock_released_upto(conn)
    cur = await conn.execute(f"DELETE FROM dead_letters WHERE {clause} RETURNING seq", args)
    seqs = [int(r[0]) for r in await cur.fetchall()]
    await release_body_if_free(conn, seqs)
    return len(seqs)
