"""The durable spool: the event log, sink cursors and dead letters, behind one protocol."""

from __future__ import annotations

from receiver.errors import StoreError
from receiver.settings import StoreSettings
from receiver.store._commit import Admission
from receiver.store.base import (
    DeadEvent,
    DeadLetter,
    DeadLetterState,
    Filling,
    IngestOutcome,
    IngestResult,
    Lease,
    LogBatch,
    NewEvent,
    Position,
    Progress,
    ReplayRecord,
    Requeued,
    RequeueSettlement,
    Route,
    SchemaVersion,
    SinkStats,
    Store,
    StoreStats,
)
from receiver.store.sqlite import SQLiteStore, sqlite_path
from sinks._extras import install_hint

__all__ = [
    "DeadEvent",
    "DeadLetter",
    "DeadLetterState",
    "Filling",
    "IngestOutcome",
    "IngestResult",
    "Lease",
    "LogBatch",
    "NewEvent",
    "Position",
    "Progress",
    "ReplayRecord",
    "RequeueSettlement",
    "Requeued",
    "Route",
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
    admission = Admission(
        max_events=settings.max_queue_events,
        max_bytes=settings.max_queue_bytes,
        deadline_seconds=settings.ingest_deadline_seconds,
    )
    if settings.url.startswith("sqlite:///"):
        return SQLiteStore(
            sqlite_path(settings.url),
            dedup_window_seconds=settings.dedup_window_seconds,
            max_spool_bytes=settings.max_spool_bytes,
            max_spool_events=settings.max_spool_events,
            max_dead_letter_bytes=settings.max_dead_letter_bytes,
            min_free_bytes=settings.min_free_bytes,
            admission=admission,
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
        max_dead_letter_bytes=settings.max_dead_letter_bytes,
        admission=admission,
        pool_max_size=settings.pool_max_size,
    )
