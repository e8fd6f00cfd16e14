"""The PostgreSQL store's SQL: the schema as numbered migrations (see ``_migrations``)
and the statements that carry its concurrency rules (see ``postgres``).

Log order is ``(xid, seq)``: ``xid`` is the id of the transaction that wrote the row
(``pg_current_xact_id()``), ``seq`` its identity value. Identity values become
visible out of order when replicas commit concurrently (a later ``seq`` can commit
first), so a reader takes only rows whose transaction ended before every transaction
still running began (``xid`` below the snapshot's ``xmin``): every row that can still
appear then has a larger ``xid``, so it lands after anything a cursor has passed.

Tables are unqualified: they live in the first schema of the connection's
``search_path`` (pick one with ``?options=-csearch_path%3Dname`` in the URL).
"""

from __future__ import annotations

from receiver.store._migrations import OUTBOX_DEAD_LETTERS_SQL, Migration

__all__ = [
    "COUNTER_SLOTS",
    "EVENT_COLS",
    "HORIZON",
    "MIGRATIONS",
    "MIGRATION_TABLE",
    "STORE_GROUP",
    "XMIN",
]

# The writing transaction's id, and the oldest id of a transaction still running,
# as bigint (xid8 has few operators and no driver type; bigint holds every real value).
XID_NOW = "pg_current_xact_id()::text::bigint"
XMIN = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"

# The spool counters are spread over this many rows so that concurrent transactions
# (several replicas, the group commit and the dispatchers) rarely wait on one row lock;
# the totals are the sums over the rows.
COUNTER_SLOTS = 16

_BASELINE = f"""
CREATE TABLE events (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source       text NOT NULL,
    event_id     text NOT NULL,
    id_origin    text NOT NULL,
    event_type   text NOT NULL,
    category     text NOT NULL,
    occurred_at  text,
    received_at  double precision NOT NULL,
    delivery_id  text,
    signature    text,
    ts_header    text,
    size         integer NOT NULL,
    body         bytea,           -- NULL once every sink has it: only the id is kept
    UNIQUE (source, event_id)
);
CREATE INDEX events_released ON events (received_at) WHERE body IS NULL;
CREATE INDEX events_delivery ON events (source, delivery_id) WHERE delivery_id IS NOT NULL;

-- Rows are updated in place (leases, attempts): leave room for HOT updates.
CREATE TABLE outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_seq       bigint NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    sink            text NOT NULL,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at double precision NOT NULL DEFAULT 0,
    lease_until     double precision NOT NULL DEFAULT 0,
    last_error      text,
    dead_at         double precision
) WITH (fillfactor = 80);
CREATE INDEX outbox_pending ON outbox (sink, id) WHERE state = 'pending';
CREATE INDEX outbox_dead ON outbox (sink, id) WHERE state = 'dead';
CREATE INDEX outbox_event ON outbox (event_seq);

CREATE TABLE replays (
    webhook_id   text NOT NULL,
    delivery_id  text NOT NULL,
    event_id     text,
    requested_at double precision NOT NULL,
    outcome      text NOT NULL,
    PRIMARY KEY (webhook_id, delivery_id)
);
CREATE INDEX replays_requested ON replays (requested_at);

-- Undelivered bytes and events, kept in the same transactions that change them, so
-- every replica checks the quota against the same committed totals without a scan.
CREATE TABLE spool_counters (
    slot   smallint PRIMARY KEY,
    bytes  bigint NOT NULL DEFAULT 0,
    events bigint NOT NULL DEFAULT 0
);
INSERT INTO spool_counters (slot) SELECT generate_series(0, {COUNTER_SLOTS - 1});
"""

_V2 = (
    f"""
-- Rows of earlier releases sort first (xid 0); new rows carry their transaction's id.
ALTER TABLE events ADD COLUMN xid bigint NOT NULL DEFAULT 0;
ALTER TABLE events ALTER COLUMN xid SET DEFAULT ({XID_NOW});
CREATE INDEX events_log ON events (xid, seq);

CREATE TABLE cursors (
    sink            text PRIMARY KEY,
    xid             bigint NOT NULL,       -- the last log position this sink finished
    seq             bigint NOT NULL,
    routes          text NOT NULL DEFAULT '["*"]',
    owner           text,                  -- lease: owner token, fencing number, expiry
    fence           bigint NOT NULL DEFAULT 0,
    lease_until     timestamptz NOT NULL DEFAULT '-infinity',
    attempts        integer NOT NULL DEFAULT 0,  -- the head event's charged failures
    next_attempt_at double precision NOT NULL DEFAULT 0,
    last_error      text
);
CREATE TABLE cursor_done (
    sink text NOT NULL,
    xid  bigint NOT NULL,
    seq  bigint NOT NULL,
    PRIMARY KEY (sink, seq)
);
CREATE TABLE dead_letters (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sink            text NOT NULL,
    seq             bigint NOT NULL,
    size            integer NOT NULL,
    state           text NOT NULL DEFAULT 'dead' CHECK (state IN ('dead', 'requeued')),
    attempts        integer NOT NULL DEFAULT 0,
    dead_at         double precision NOT NULL,
    error           text NOT NULL,
    requeued_at     double precision,
    next_attempt_at double precision NOT NULL DEFAULT 0,
    UNIQUE (sink, seq)
);
CREATE INDEX dead_letters_seq ON dead_letters (seq);
CREATE INDEX dead_letters_due ON dead_letters (sink, next_attempt_at) WHERE state = 'requeued';
CREATE TABLE meta (
    key   text PRIMARY KEY,
    xid   bigint NOT NULL DEFAULT 0,
    seq   bigint NOT NULL DEFAULT 0,
    value bytea
);

-- A pending row with dead_at set is a dead letter an operator re-queued (dead_at held the
-- re-queue time): it stays a re-queued dead letter, beside the log, not the sink's head.
INSERT INTO cursors (sink, xid, seq)
SELECT sink, 0, coalesce(
    min(event_seq) FILTER (WHERE state = 'pending' AND dead_at IS NULL) - 1, max(event_seq))
FROM outbox GROUP BY sink;
INSERT INTO cursor_done (sink, xid, seq)
SELECT o.sink, 0, o.event_seq FROM outbox o JOIN cursors c ON c.sink = o.sink
WHERE o.event_seq > c.seq AND (o.state <> 'pending' OR o.dead_at IS NOT NULL);
-- Routes are now applied when an event is dispatched: events above a cursor that were
-- not routed to its sink when they arrived are marked done, so none goes out now.
INSERT INTO cursor_done (sink, xid, seq)
SELECT c.sink, 0, e.seq FROM cursors c JOIN events e ON e.seq > c.seq
WHERE e.body IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.sink = c.sink AND o.event_seq = e.seq)
ON CONFLICT DO NOTHING;
"""
    + OUTBOX_DEAD_LETTERS_SQL
    + """INSERT INTO meta (key, xid, seq)
SELECT 'released_upto', 0, coalesce((SELECT min(seq) FROM cursors),
                                    (SELECT max(seq) FROM events), 0);
-- The spool is now what some cursor has not passed.
UPDATE spool_counters SET bytes = 0, events = 0;
UPDATE spool_counters SET bytes = t.b, events = t.n
FROM (SELECT coalesce(sum(size), 0) AS b, count(*) AS n FROM events
      WHERE body IS NOT NULL AND seq > (SELECT seq FROM meta WHERE key = 'released_upto')) t
WHERE slot = 0;
DROP TABLE outbox;
"""
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "baseline: events, outbox, replays, spool counters", _BASELINE),
    Migration(2, "event log with per-sink cursors, done sets and dead letters", _V2),
)

EVENT_COLS = (
    "e.seq, e.event_id, e.id_origin, e.event_type, e.category, e.occurred_at, "
    "e.received_at, e.source, e.delivery_id, e.body, e.signature, e.ts_header"
)

# The newest position no transaction still running can get under: rows up to it are
# final (see the module docstring).
HORIZON = f"""
SELECT xid, seq FROM events WHERE xid < {XMIN}
ORDER BY xid DESC, seq DESC LIMIT 1
"""

# One statement (so one implicit transaction, one commit, one round trip) stores a
# group: the events and the spool counters. The events go in (source, event id)
# order; the counter row is locked only after every event insert (its subquery reads
# the finished "ins"), so replicas take locks in the same order: event keys, then a
# counter row.
STORE_GROUP = """
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
    RETURNING seq, source, event_id, size
), counted AS (
    UPDATE spool_counters c SET bytes = c.bytes + t.add_bytes, events = c.events + t.add_events
    FROM (SELECT coalesce(sum(size), 0) AS add_bytes, count(*) AS add_events
          FROM ins) t
    WHERE c.slot = %s AND t.add_events > 0
)
SELECT seq, source, event_id FROM ins
"""  # %b: the bodies go as a binary bytea[], not as hex text twice their size

MIGRATION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    description text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""
