"""The durable spool: dedup, outbox and dead letters, behind one protocol."""

from __future__ import annotations

from receiver.errors import StoreError
from receiver.settings import StoreSettings
from receiver.store.base import (
    Claimed,
    DeadLetter,
    IngestOutcome,
    IngestResult,
    NewEvent,
    PendingSummary,
    ReplayRecord,
    RetryUpdate,
    SchemaVersion,
    SinkStats,
    Store,
    StoreStats,
)
from receiver.store.sqlite import SQLiteStore, sqlite_path
from sinks._extras import install_hint

__all__ = [
    "Claimed",
    "DeadLetter",
    "IngestOutcome",
    "IngestResult",
    "NewEvent",
    "PendingSummary",
    "ReplayRecord",
    "RetryUpdate",
    "SQLiteStore",
    "SchemaVersion",
    "SinkStats",
    "Store",
    "StoreStats",
    "create_store",
]


def create_store(settings: StoreSettings, *, exclusive: bool = False) -> Store:
    """The store named by ``settings.url`` (not yet opened).

    Args:
        exclusive: take the single-writer lock (``serve`` does; CLI commands do not).
            Only SQLite has one; PostgreSQL is shared by design.

    Raises:
        StoreError: the backend's driver is not installed.
    """
    if settings.url.startswith("sqlite:///"):
        return SQLiteStore(
            sqlite_path(settings.url),
            dedup_window_seconds=settings.dedup_window_seconds,
            max_spool_bytes=settings.max_spool_bytes,
            max_spool_events=settings.max_spool_events,
            exclusive=exclusive,
        )
    try:
        from receiver.store.postgres import PostgresStore
    except ImportError as exc:  # psycopg is an optional extra
        raise StoreError(
            f"the PostgreSQL store needs psycopg ({exc.name} is missing): {install_hint('postgres')}"
        ) from None
    password = settings.password.get_secret_value() if settings.password is not None else None
    return PostgresStore(
        settings.url,
        password=password,
        dedup_window_seconds=settings.dedup_window_seconds,
        max_spool_bytes=settings.max_spool_bytes,
        max_spool_events=settings.max_spool_events,
        pool_max_size=settings.pool_max_size,
    )
