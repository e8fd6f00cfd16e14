"""The PostgreSQL schema, as numbered migrations (see ``_migrations``).

Tables are unqualified: they live in the first schema of the connection's
``search_path`` (pick one with ``?options=-csearch_path%3Dname`` in the URL).
"""

from __future__ import annotations

from receiver.store._migrations import Migration

__all__ = ["COUNTER_SLOTS", "MIGRATIONS"]

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
