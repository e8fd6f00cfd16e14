"""Versioned schema migrations, the same rules for every backend.

A backend keeps a tuple of ``Migration`` numbered 1..n and records the highest
applied number in the database (SQLite: ``PRAGMA user_version``; PostgreSQL: the
``schema_migrations`` table). Opening a store applies what is missing, in order,
each migration in its own transaction together with its version record, so a
crash leaves the schema at a whole version. A database newer than this release
is refused rather than used with a schema the code does not know.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from receiver.errors import StoreError
from receiver.store.base import SchemaVersion

__all__ = ["OUTBOX_DEAD_LETTERS_SQL", "Migration", "SchemaVersion", "pending"]

# Version 2 for both backends: the 0.1.0 outbox's dead rows, and the pending rows an
# operator re-queued (dead_at set, holding the re-queue time), become dead letters; the
# re-queued ones stay re-queued so they are delivered once, beside the log. Plain SQL
# both SQLite and PostgreSQL accept.
OUTBOX_DEAD_LETTERS_SQL = """\
INSERT INTO dead_letters (sink, seq, size, attempts, dead_at, error)
SELECT o.sink, o.event_seq, e.size, o.attempts, coalesce(o.dead_at, 0),
       coalesce(o.last_error, '')
FROM outbox o JOIN events e ON e.seq = o.event_seq WHERE o.state = 'dead';
INSERT INTO dead_letters (sink, seq, size, state, attempts, dead_at, error, requeued_at,
                          next_attempt_at)
SELECT o.sink, o.event_seq, e.size, 'requeued', o.attempts, o.dead_at,
       coalesce(o.last_error, 're-queued'), o.dead_at, o.next_attempt_at
FROM outbox o JOIN events e ON e.seq = o.event_seq
WHERE o.state = 'pending' AND o.dead_at IS NOT NULL;
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    sql: str


def pending(migrations: Sequence[Migration], current: int, *, backend: str) -> list[Migration]:
    """The migrations still to apply on a database at version ``current``, in order.

    Raises:
        StoreError: the database is newer than this release knows.
        ValueError: ``migrations`` is not numbered 1..n (a programming error).
    """
    numbers = [m.version for m in migrations]
    if numbers != list(range(1, len(migrations) + 1)):
        raise ValueError(f"{backend} migrations must be numbered 1..n, got {numbers}")
    if current > len(migrations):
        raise StoreError(
            f"{backend} schema version {current} is newer than this release knows"
            f" ({len(migrations)}); upgrade bighub-siem"
        )
    return list(migrations[current:])
