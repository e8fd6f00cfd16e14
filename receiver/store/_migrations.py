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

__all__ = ["Migration", "SchemaVersion", "pending"]


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
