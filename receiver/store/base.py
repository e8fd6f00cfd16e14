"""What every store backend provides, and the values it trades in.

Semantics (the same for every backend):

- ``ingest`` stores an event and one outbox row per routed sink in one transaction,
  made durable before it returns; concurrent calls share commits.
- dedup is by (source, event id) and lasts ``dedup_window_seconds`` from receipt; an
  event with an outbox row still pending or dead is kept (and deduplicated) for as long
  as that lasts, and pruned once fully delivered and older than the window.
- outbox rows go pending -> delivered | dead. A claim leases rows so no other
  dispatcher takes them until the lease ends.
- the spool (bytes and events not yet delivered everywhere) has a quota; over it,
  ``ingest`` answers ``QUOTA`` and stores nothing.
- ``open`` creates or migrates the schema (versioned, see ``_migrations``).
- a ``shared`` store is used by several processes at once (PostgreSQL): leases are
  how dispatchers split the work, so nobody may release another's leases. A store
  that is not shared (SQLite) is owned by one ``serve`` process.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sinks import Event

__all__ = [
    "Claimed",
    "DeadLetter",
    "IngestOutcome",
    "IngestResult",
    "NewEvent",
    "PendingSummary",
    "ReplayRecord",
    "RetryUpdate",
    "SchemaVersion",
    "SinkStats",
    "Store",
    "StoreStats",
    "event_from_row",
]


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event verified and parsed at ingress, not yet stored."""

    source: str
    event_id: str
    id_origin: str
    event_type: str
    category: str
    occurred_at: str | None
    received_at: float
    delivery_id: str | None
    body: bytes = field(repr=False)
    signature: str | None = field(repr=False)
    timestamp: str | None
    sinks: tuple[str, ...]


def event_from_row(row: Sequence[Any]) -> Event:
    """An ``Event`` from the 12 event columns every backend selects, in this order:
    seq, event_id, id_origin, event_type, category, occurred_at, received_at, source,
    delivery_id, body, signature, timestamp header."""
    return Event(
        seq=row[0],
        event_id=row[1],
        id_origin=row[2],
        event_type=row[3],
        category=row[4],
        occurred_at=row[5],
        received_at=row[6],
        source=row[7],
        delivery_id=row[8],
        body=bytes(row[9]),
        signature=row[10],
        timestamp=row[11],
    )


class IngestOutcome(enum.Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    QUOTA = "quota"


@dataclass(frozen=True, slots=True)
class IngestResult:
    outcome: IngestOutcome
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class Claimed:
    """One leased outbox row with its event.

    ``requeued_at``: when an operator last re-queued this row from the dead letters
    (``None`` if never); the dispatcher's ``max_age_seconds`` counts from it, so a
    re-queued old event gets a fresh chance instead of expiring again at once.
    """

    outbox_id: int
    attempts: int
    event: Event
    requeued_at: float | None = None


@dataclass(frozen=True, slots=True)
class RetryUpdate:
    outbox_id: int
    next_attempt_at: float
    error: str
    charge: bool = True  # False: the sink was unavailable; the attempt is not counted


@dataclass(frozen=True, slots=True)
class PendingSummary:
    due: int  # counted up to the caller's limit
    oldest_received_at: float | None
    next_due_at: float | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    outbox_id: int
    sink: str
    event_id: str
    event_type: str
    received_at: float
    attempts: int
    dead_at: float
    error: str


@dataclass(frozen=True, slots=True)
class SinkStats:
    pending: int = 0
    dead: int = 0
    oldest_pending_received_at: float | None = None


@dataclass(frozen=True, slots=True)
class ReplayRecord:
    """One replay the reconciler asked BIGHUB for (the replay ledger)."""

    webhook_id: str
    delivery_id: str
    event_id: str | None
    requested_at: float
    outcome: str  # "requested" | "failed: <reason>" | ...


@dataclass(frozen=True, slots=True)
class StoreStats:
    spool_bytes: int
    spool_events: int
    events_held: int
    sinks: dict[str, SinkStats]
    ingest_commits: int = 0  # ingest transactions committed by this process since open


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """What ``open`` did to the schema: from ``before`` to ``after`` (0 = empty)."""

    before: int
    after: int


class Store(Protocol):
    """A durable spool: dedup, outbox and dead letters."""

    shared: bool
    """Several processes may use the store at once (leases split the work)."""

    migrated: SchemaVersion | None
    """Set by ``open``: the schema version found and the one now in place."""

    async def open(self) -> None:
        """Connect, and create or migrate the schema.

        Raises:
            StoreError: unreachable, or a schema newer than this release.
        """

    async def close(self) -> None: ...

    async def ingest(self, event: NewEvent) -> IngestResult:
        """Store durably, or say why not.

        Raises:
            StoreError: the store cannot write now.
        """

    async def claim(
        self, sink: str, *, limit: int, max_bytes: int, now: float, lease_seconds: float
    ) -> list[Claimed]: ...

    async def pending_summary(self, sink: str, *, now: float, limit: int) -> PendingSummary:
        """Due rows (counted up to ``limit``), the oldest due row's receipt time, and
        when nothing is due, when the next pending row becomes due."""

    async def mark_delivered(self, outbox_ids: Sequence[int]) -> None: ...

    async def mark_retry(self, updates: Sequence[RetryUpdate]) -> None: ...

    async def mark_dead(self, failures: Sequence[tuple[int, str]], *, now: float) -> None: ...

    async def release_leases(self) -> None:
        """Forget every lease (start-up of a store that is not ``shared``, after a crash)."""

    async def dead_letter_pending(self, sink: str, reason: str, *, now: float) -> int:
        """Move every pending row of ``sink`` to the dead letters (a sink no longer
        configured); return how many. They stay listable, re-queueable and purgeable."""

    async def dead_letters(
        self, *, sink: str | None = None, limit: int = 100, after_id: int = 0
    ) -> list[DeadLetter]: ...

    async def requeue_dead(
        self, *, sink: str | None = None, ids: Sequence[int] | None = None, now: float
    ) -> int: ...

    async def purge_dead(
        self, *, sink: str | None = None, ids: Sequence[int] | None = None
    ) -> int: ...

    async def has_event(self, source: str, event_id: str) -> bool: ...

    async def has_delivery(self, source: str, delivery_id: str) -> bool:
        """Whether an event held for ``source`` arrived with this delivery id header."""

    async def record_replay(self, record: ReplayRecord) -> None:
        """Remember a replay request (insert or replace by webhook + delivery id)."""

    async def replays_since(self, webhook_id: str, since: float) -> dict[str, ReplayRecord]:
        """Replays asked for ``webhook_id`` at or after ``since``, by delivery id."""

    async def stats(self) -> StoreStats: ...

    async def prune(self, *, now: float) -> int:
        """Forget fully delivered events older than the dedup window; return how many."""

    async def writable(self) -> bool: ...
