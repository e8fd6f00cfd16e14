"""The SQLite store's SQL: the schema as numbered migrations (see ``_migrations``)
and the statements the store runs. Positions are ``(0, seq)`` here: one writer
commits at a time, so ``seq`` order is commit order.
"""

from __future__ import annotations

from receiver.store._migrations import OUTBOX_DEAD_LETTERS_SQL, Migration

__all__ = ["EVENT_COLS", "MIGRATIONS", "SCHEMA_VERSION"]

# Version 1: the outbox design of 0.1.0 (kept as it shipped, so old files migrate).
_V1 = """
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
CREATE INDEX IF NOT EXISTS events_delivery ON events (source, delivery_id)
    WHERE delivery_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq       INTEGER NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    sink            TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',
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

# Version 2: the event log with one cursor per sink. The outbox's state becomes
# cursors (just before each sink's oldest pending row), done sets (rows above that
# cursor the sink already had), and dead letters; then the outbox goes.
_V2 = (
    """
CREATE TABLE cursors (
    sink            TEXT PRIMARY KEY,
    seq             INTEGER NOT NULL,      -- the last log position this sink finished
    routes          TEXT NOT NULL DEFAULT '["*"]',
    owner           TEXT,                  -- lease: owner token, fencing number, expiry
    fence           INTEGER NOT NULL DEFAULT 0,
    lease_until     REAL NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,  -- the head event's charged failures
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error      TEXT
);
CREATE TABLE cursor_done (
    sink TEXT NOT NULL,
    seq  INTEGER NOT NULL,
    PRIMARY KEY (sink, seq)
) WITHOUT ROWID;
CREATE TABLE dead_letters (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    sink            TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    size            INTEGER NOT NULL,
    state           TEXT NOT NULL DEFAULT 'dead',  -- dead | requeued
    attempts        INTEGER NOT NULL DEFAULT 0,
    dead_at         REAL NOT NULL,
    error           TEXT NOT NULL,
    requeued_at     REAL,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    UNIQUE (sink, seq)
);
CREATE INDEX dead_letters_seq ON dead_letters (seq);
CREATE INDEX dead_letters_due ON dead_letters (sink, next_attempt_at)
    WHERE state = 'requeued';
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value
);

-- A pending row with dead_at set is a dead letter an operator re-queued (dead_at held the
-- re-queue time): it stays a re-queued dead letter, beside the log, not the sink's head.
INSERT INTO cursors (sink, seq)
SELECT sink, coalesce(
    min(CASE WHEN state = 'pending' AND dead_at IS NULL THEN event_seq END) - 1,
    max(event_seq))
FROM outbox GROUP BY sink;
INSERT INTO cursor_done (sink, seq)
SELECT o.sink, o.event_seq FROM outbox o JOIN cursors c ON c.sink = o.sink
WHERE o.event_seq > c.seq AND (o.state != 'pending' OR o.dead_at IS NOT NULL);
-- Routes are now applied when an event is dispatched: events above a cursor that were
-- not routed to its sink when they arrived are marked done, so none goes out now.
INSERT OR IGNORE INTO cursor_done (sink, seq)
SELECT c.sink, e.seq FROM cursors c JOIN events e ON e.seq > c.seq
WHERE e.body IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.sink = c.sink AND o.event_seq = e.seq);
"""
    + OUTBOX_DEAD_LETTERS_SQL
    + """INSERT INTO meta (key, value)
SELECT 'released_upto', coalesce((SELECT min(seq) FROM cursors),
                                 (SELECT max(seq) FROM events), 0);
DROP TABLE outbox;
"""
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "baseline: events, outbox, replays", _V1),
    Migration(2, "event log with per-sink cursors, done sets and dead letters", _V2),
)
SCHEMA_VERSION = len(MIGRATIONS)

EVENT_COLS = (
    "e.seq, e.event_id, e.id_origin, e.event_type, e.category, e.occurred_at, "
    "e.received_at, e.source, e.delivery_id, e.body, e.signature, e.ts_header"
)

INSERT_EVENT_COLS = (
    "source, event_id, id_origin, event_type, category, occurred_at, received_at,"
    " delivery_id, signature, ts_header, size, body"
)
