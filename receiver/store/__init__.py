"""The durable spool: dedup, outbox and dead letters, behind one protocol."""

from __future__ import annotations

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
    SinkStats,
    Store,
    StoreStats,
)
from receiver.store.sqlite import SQLiteStore, sqlite_path

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
    "SinkStats",
    "Store",
    "StoreStats",
    "create_store",
]


def create_store(settings: StoreSettings, *, exclusive: bool = False) -> Store:
    """The store named by ``settings.url`` (not yet opened).

    Args:
        exclusive: take the single-writer lock (``serve`` does; CLI commands do not).
    """
    if settings.url.startswith("sqlite:///"):
        return SQLiteStore(
            sqlite_path(settings.url),
            dedup_window_seconds=settings.dedup_window_seconds,
            max_spool_bytes=settings.max_spool_bytes,
            max_spool_events=settings.max_spool_events,
            exclusive=exclusive,
        )
    raise NotImplementedError("PostgreSQL store is not available in this release")
