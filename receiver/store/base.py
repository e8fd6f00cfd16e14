"""What every store backend provides, and the values it trades in.

The store is an append-only **event log** plus one **cursor per sink** (see README,
"Architecture"). Semantics, the same for every backend:

- ``ingest`` appends one row per new event, made durable before it returns;
  concurrent calls share commits (group commit), and the queue of calls waiting for
  a commit is bounded by count, bytes and time (``OverloadedError`` past any of them).
- dedup is by (source, event id) and lasts ``dedup_window_seconds`` from receipt; an
  event some cursor has not passed, or that is dead-lettered, is kept (and
  deduplicated) for as long as that lasts.
- every log row has a **position** ``(xid, seq)``: SQLite commits one transaction at a
  time, so its positions are ``(0, seq)`` in commit order; PostgreSQL orders by the
  writing transaction's id first, and a reader only sees rows whose transaction ended
  before every transaction still running began (see ``postgres``), so a cursor never
  passes a row that has yet to commit.
- a sink's cursor is the position it has finished. Its dispatcher holds a **lease**
  on it (owner token + fencing number, renewed while it works); every cursor write
  names the lease and is refused (``LeaseLostError``) when it is no longer current.
- events above a cursor that its sink already took (delivered, or dead-lettered while
  an older event is retried) are recorded in the cursor's *done set*, so they are not
  sent again; the set only ever holds the few events of one batch.
- a dead letter keeps its event (body included) until it is purged or delivered after
  a re-queue. Dead-letter bytes have their own limit (``DeadLetterBudgetError``).
- the spool (events some cursor has not passed) has a quota; over it ``ingest``
  answers ``QUOTA`` and stores nothing.
- ``open`` creates or migrates the schema (versioned, see ``_migrations``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from sinks import Event

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
    "SchemaVersion",
    "SinkStats",
    "Store",
    "StoreStats",
    "event_from_row",
]

DeadLetterState = Literal["dead", "requeued", "all"]

Position = tuple[int, int]
"""A place in the log: (writing transaction id, seq); SQLite's xid is always 0."""


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event verified and parsed at ingress, not yet stored.

    ``sinks``: the sinks its type routes to in this process's configuration (whose
    dispatchers are woken). The body is stored whatever it says: routes apply when an
    event is dispatched, and another replica's configuration may route it elsewhere;
    release drops the body once every cursor passed it.
    """

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
class Route:
    """A sink and the event-type globs routed to it (``SinkConfig.events``)."""

    sink: str
    patterns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Lease:
    """A dispatcher's hold on one sink's cursor, and the cursor as it was read.

    ``attempts`` / ``next_attempt_at`` / ``last_error`` describe the head of the
    sink's queue (the first event after ``position``): charged failures so far and
    when it may be tried again.
    """

    sink: str
    owner: str
    fence: int
    position: Position
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class LogBatch:
    """Events after a cursor, in log order, and how far the read looked.

    ``scanned_to``: every log row up to this position that the sink's routes take is
    in ``events`` (or in its done set); the cursor may move here once they are handled.
    ``more``: the read stopped before the end of the log (the batch is full).
    ``ready_at``: set when the read held back a batch that is neither full nor old
    enough to go (see ``Store.read``): read again then, or once more events arrived;
    ``filling`` then says what is held so far, for that next read.
    """

    events: tuple[Event, ...]
    positions: tuple[Position, ...]
    scanned_to: Position
    more: bool = False
    ready_at: float | None = None
    filling: Filling | None = None


@dataclass(frozen=True, slots=True)
class Filling:
    """A batch held back to fill: from the cursor at ``base``, the log up to
    ``scanned_to`` holds ``events`` routed events of ``size`` body bytes, the first of
    them received at ``first_at``. Passed back to ``Store.read``, it lets the read count
    only what came after ``scanned_to``."""

    base: Position
    scanned_to: Position
    events: int
    size: int
    first_at: float


@dataclass(frozen=True, slots=True)
class DeadEvent:
    seq: int
    position: Position
    attempts: int
    error: str


@dataclass(frozen=True, slots=True)
class Progress:
    """One cursor write: where it moves and what else the outcome decided.

    ``done``: positions above the new cursor the sink has already taken (delivered,
    or in ``dead``); ``dead``: new dead letters (anywhere in the batch).
    """

    position: Position
    done: tuple[Position, ...] = ()
    dead: tuple[DeadEvent, ...] = ()
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class Requeued:
    """A dead letter an operator re-queued, due for another attempt."""

    dead_letter_id: int
    attempts: int
    requeued_at: float
    event: Event


@dataclass(frozen=True, slots=True)
class RequeueSettlement:
    """What one send of re-queued dead letters decided, by dead-letter id."""

    delivered: tuple[int, ...] = ()
    retry: tuple[tuple[int, float, str, bool], ...] = ()  # id, next attempt at, error, charge
    dead: tuple[tuple[int, str], ...] = ()  # id, error: back to the dead letters


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    sink: str
    event_id: str
    event_type: str
    received_at: float
    attempts: int
    dead_at: float
    error: str
    state: str = "dead"  # dead | requeued


@dataclass(frozen=True, slots=True)
class SinkStats:
    pending: int = 0  # log events after the cursor (all types; bounded count)
    dead: int = 0  # in state "dead" (re-queued ones are not counted)
    oldest_pending_received_at: float | None = None
    attempts: int = 0  # charged failures of the event at the head


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
    dead_bytes: int = 0
    dead_events: int = 0


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """What ``open`` did to the schema: from ``before`` to ``after`` (0 = empty)."""

    before: int
    after: int


class Store(Protocol):
    """A durable spool: the event log, sink cursors, dead letters, the replay ledger."""

    shared: bool
    """Several processes may use the store at once (PostgreSQL)."""

    migrated: SchemaVersion | None
    """Set by ``open``: the schema version found and the one now in place."""

    async def open(self) -> None:
        """Connect, and create or migrate the schema.

        Raises:
            StoreError: unreachable, or a schema newer than this release.
        """

    async def close(self) -> None: ...

    async def ingest(
        self, event: NewEvent, *, alive: Callable[[], bool] | None = None
    ) -> IngestResult:
        """Store durably, or say why not.

        Args:
            alive: false once the client went away; a request still queued then is
                dropped instead of committed (its sender retries).

        Raises:
            OverloadedError: the queue is full or the deadline passed (answer 503 now).
            EventRefusedError: the database cannot hold this event.
            StoreError: the store cannot write now.
        """

    # -- cursors ---------------------------------------------------------------------

    async def ensure_cursors(self, routes: Sequence[Route]) -> None:
        """Create a cursor at the end of the log for each sink that has none; record
        each sink's routes (used when a removed sink is retired)."""

    async def acquire(
        self, sink: str, owner: str, *, lease_seconds: float, create: bool = True
    ) -> Lease | None:
        """Take (or take back) the lease on ``sink``'s cursor; None while another owner
        holds a lease that has not expired.

        Args:
            create: make a missing cursor, at the oldest event still held (embedding,
                tests). ``serve`` passes False: its cursors are made at start, and one
                that is missing was retired.

        Raises:
            CursorMissingError: ``create`` is False and the sink has no cursor.
        """

    async def renew(self, lease: Lease, *, lease_seconds: float) -> bool:
        """Extend the lease; False when it is no longer ours (nothing may be written)."""

    async def release_lease(self, lease: Lease) -> None:
        """Give the lease up (clean shutdown), so a standby takes over at once."""

    async def read(
        self,
        lease: Lease,
        route: Route,
        *,
        limit: int,
        max_bytes: int,
        fill_wait: float = 0.0,
        now: float = 0.0,
        filling: Filling | None = None,
    ) -> LogBatch:
        """Routed events after the cursor, skipping its done set, in log order; cut at
        ``limit`` events or ``max_bytes`` of bodies (the first event always comes).

        With ``fill_wait``, a batch that is not full and whose oldest event arrived less
        than ``fill_wait`` before ``now`` is not loaded (no bodies are read): the answer
        has no events, ``ready_at`` says when the batch is due and ``filling`` what it
        holds so far. Passing that ``filling`` to the next read (same cursor) makes it
        look only at the log after it; one from another cursor position is ignored."""

    async def advance(self, lease: Lease, progress: Progress) -> Lease:
        """Write an outcome in one transaction: cursor, head state, done set, dead letters.

        Raises:
            LeaseLostError: the lease is not current; nothing was written.
            DeadLetterBudgetError: the new dead letters do not fit; nothing was written.
        """

    async def requeued(
        self, sink: str, *, now: float, limit: int, max_bytes: int
    ) -> list[Requeued]: ...

    async def settle_requeued(self, lease: Lease, settlement: RequeueSettlement) -> None:
        """Record the outcome of a send of re-queued dead letters.

        Raises:
            LeaseLostError: the lease is not current; nothing was written.
        """

    async def retire_sink(self, sink: str, reason: str, *, now: float) -> int:
        """A sink no longer configured: dead-letter the events its routes still had
        to deliver, drop its cursor; return how many events were dead-lettered."""

    async def cursor_sinks(self) -> list[str]:
        """Every sink that has a cursor."""

    # -- dead letters ----------------------------------------------------------------

    async def dead_letters(
        self,
        *,
        sink: str | None = None,
        limit: int = 100,
        after_id: int = 0,
        state: DeadLetterState = "dead",
    ) -> list[DeadLetter]:
        """Dead letters by id; ``state`` "requeued" lists those waiting to go out again."""

    async def requeue_dead(
        self, *, sink: str | None = None, ids: Sequence[int] | None = None, now: float
    ) -> int: ...

    async def purge_dead(
        self, *, sink: str | None = None, ids: Sequence[int] | None = None
    ) -> int: ...

    # -- queries and upkeep ----------------------------------------------------------

    async def has_event(self, source: str, event_id: str) -> bool: ...

    async def has_delivery(self, source: str, delivery_id: str) -> bool:
        """Whether an event held for ``source`` arrived with this delivery id header."""

    async def record_replay(self, record: ReplayRecord) -> None:
        """Remember a replay request (insert or replace by webhook + delivery id)."""

    async def replays_since(self, webhook_id: str, since: float) -> dict[str, ReplayRecord]:
        """Replays asked for ``webhook_id`` at or after ``since``, by delivery id."""

    async def stats(self) -> StoreStats: ...

    async def release(self) -> int:
        """Release bodies below the slowest cursor (not dead-lettered), in small
        batches; return how many events left the spool."""

    async def prune(self, *, now: float) -> int:
        """Forget released events older than the dedup window, in small batches that
        never hold up ingest; return how many."""

    async def writable(self) -> bool:
        """A real small durable write (and, for a local file, enough free disk)."""
