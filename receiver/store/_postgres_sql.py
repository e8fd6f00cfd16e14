"""The PostgreSQL store's SQL: the schema as numbered migrations (see ``_migrations``)
and the statements that carry its concurrency rules (see ``postgres``).

Tables are unqualified: they live in the first schema of the connection's
``search_path`` (pick one with ``?options=-csearch_path%3Dname`` in the URL).
"""

from __future__ import annotations

from receiver.store._migrations import Migration

__all__ = [
    "CLAIM",
    "COUNTER_SLOTS",
    "EVENT_COLS",
    "MIGRATIONS",
    "MIGRATION_TABLE",
    "STORE_GROUP",
]

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

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "baseline: events, outbox, replays, spool counters", _BASELINE),
)

EVENT_COLS = (
    "e.seq, e.event_id, e.id_origin, e.event_type, e.category, e.occurred_at, "
    "e.received_at, e.source, e.delivery_id, e.body, e.signature, e.ts_header"
)

# One statement (so one implicit transaction, one commit, one round trip) stores a
# group: the events, their outbox rows and the spool counters. The events go in
# (source, event id) order; the counter row is locked only after every event insert
# (its subquery reads the finished "ins"), so replicas take locks in the same order:
# event keys, then a counter row.
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
CLAIM = f"""
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
    RETURNING o.id, o.attempts, o.event_seq, o.dead_at
)
SELECT l.id, l.attempts, {EVENT_COLS}, l.dead_at FROM leased l JOIN events e ON e.seq = l.event_seq
ORDER BY l.id
"""

MIGRATION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    description text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""
