"""The sink extension point: the event record, the sink protocol and its errors.

Everything a sink needs lives here, so a sink never imports ``receiver``.

Exception tree (the dispatcher decides what to do from the class alone)::

    SinkError
    ├── RetryableSinkError        the batch failed this time; retry it with backoff,
    │   │                         one attempt charged to each event
    │   └── SinkUnavailableError  the destination as a whole is down or refuses us
    │                             (connection refused, bad token, throttling); events
    │                             wait without being charged attempts (at least
    │                             ``retry_after`` seconds when the destination said so),
    │                             the sink is reported unhealthy
    ├── PermanentSinkError        these events can never be delivered as they are;
    │                             dead-letter them (kept, listable, re-queueable)
    └── PartialDeliveryError      some events of the batch failed; ``failures`` maps
                                  batch positions to one of the errors above, every
                                  other event of the batch was delivered
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring as _quote  # C: quoted, escaped, UTF-8 kept
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sinks._json import read_body

SCHEMA_VERSION = 1

__all__ = [
    "SCHEMA_VERSION",
    "Event",
    "PartialDeliveryError",
    "PermanentSinkError",
    "RetryableSinkError",
    "Sink",
    "SinkConfig",
    "SinkError",
    "SinkHealth",
    "SinkUnavailableError",
]


class SinkError(Exception):
    """Base of every error a sink raises from ``start``, ``send`` or ``health``."""


class RetryableSinkError(SinkError):
    """The batch may succeed later: retry with backoff, charging one attempt."""


class SinkUnavailableError(RetryableSinkError):
    """The destination refuses all traffic for now (down, bad credentials, throttling).

    Events are kept pending without being charged attempts, so an operator can
    fix a token or bring a broker back without anything being dead-lettered.

    Args:
        message: what is wrong, for the operator (never a secret).
        retry_after: seconds the destination asked us to wait (an HTTP ``Retry-After``),
            if it said; the dispatcher waits at least that long (up to its cap).
    """

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentSinkError(SinkError):
    """The events can never be delivered as they are: dead-letter them."""


class PartialDeliveryError(SinkError):
    """Some events of a batch failed; every event not in ``failures`` was delivered.

    Args:
        failures: batch position -> ``RetryableSinkError`` or ``PermanentSinkError``.
    """

    def __init__(self, failures: Mapping[int, SinkError]) -> None:
        bad = [i for i, e in failures.items() if isinstance(e, PartialDeliveryError)]
        if bad:
            raise TypeError("a PartialDeliveryError cannot nest another")
        self.failures = dict(failures)
        super().__init__(f"{len(self.failures)} event(s) of the batch failed")


@functools.lru_cache(maxsize=1024)  # the events of a batch share a few seconds
def _iso_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def _iso(ts: float) -> str:
    """``ts`` as ISO 8601 UTC with milliseconds: exactly what
    ``datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")``
    gives (microseconds rounded half-even, then cut to milliseconds), at a fraction
    of its cost: it runs once per exported event."""
    frac, whole = math.modf(ts)
    second, micro = int(whole), round(frac * 1e6)
    if micro >= 1_000_000:
        second, micro = second + 1, micro - 1_000_000
    elif micro < 0:
        second, micro = second - 1, micro + 1_000_000
    return f"{_iso_second(second)}.{micro // 1000:03d}+00:00"


def _quote_or_null(value: str | None) -> str:
    return "null" if value is None else _quote(value)


@dataclass(frozen=True, slots=True)
class Event:
    """One stored BIGHUB event as handed to a sink.

    Attributes:
        seq: the store's sequence number for this event (monotonic per store).
        event_id: BIGHUB's id (or the derived one, see ``id_origin``).
        id_origin: where the id came from: ``body.event_id``, ``body.id``,
            ``header``, or ``sha256`` of the raw body.
        event_type: e.g. ``decision_event.created``.
        category: ``decision`` / ``rule`` / ``approval`` / ``other``.
        occurred_at: ISO 8601 time the event says it happened, if it says.
        received_at: epoch seconds when the receiver stored it.
        source: the ingress source name (dedup is per source).
        delivery_id: BIGHUB's delivery id header, if sent.
        body: the raw bytes exactly as received and verified.
        signature: the signature header as received (for re-verification).
        timestamp: the timestamp header as received.
    """

    seq: int
    event_id: str
    id_origin: str
    event_type: str
    category: str
    occurred_at: str | None
    received_at: float
    source: str
    delivery_id: str | None
    body: bytes = field(repr=False)
    signature: str | None = field(default=None, repr=False)
    timestamp: str | None = None

    def payload(self) -> Any:
        """The BIGHUB body, parsed (it was validated as a JSON object at ingress).

        For reading fields only: re-encoding it is not the body BIGHUB signed (a number
        such as 1e400 parses to infinity, duplicate keys collapse). Exports splice the
        body itself (``export_json``).
        """
        return read_body(self.body)

    def export_record(self) -> dict[str, Any]:
        """The export record of schema version 1, parsed (see ``payload`` for why not to
        re-encode it; ``export_json`` is the record on the wire)."""
        return {**self.export_record_head(), "payload": self.payload()}

    def export_json(self, *, one_line: bool = True) -> bytes:
        """The export record as compact UTF-8 JSON, without a trailing newline.

        The payload is the body BIGHUB signed, spliced in byte for byte: ingress admitted
        it only as a strict UTF-8 JSON object, so the record is strict JSON whatever the
        body holds (1e400, escapes, duplicate keys, U+2028, any whitespace).

        Args:
            one_line: for line-delimited outputs (stdout): raw CR and LF, which JSON
                allows only as whitespace between tokens, become spaces - the only
                change, and only for bodies that contain them. False keeps every byte
                (a Kafka value is framed by its length, not by lines).
        """
        body = self.body
        if one_line and (b"\n" in body or b"\r" in body):
            body = body.replace(b"\r", b" ").replace(b"\n", b" ")
        # The head written out by hand: the same text the JSON encoder would make of
        # export_record_head() (encode_basestring is its string escaper), for a
        # third of the cost per event.
        head = (
            f'{{"schema_version":{SCHEMA_VERSION},"event_id":{_quote(self.event_id)},'
            f'"event_type":{_quote(self.event_type)},"category":{_quote(self.category)},'
            f'"occurred_at":{_quote_or_null(self.occurred_at)},'
            f'"received_at":"{_iso(self.received_at)}","source":{_quote(self.source)},'
            f'"delivery_id":{_quote_or_null(self.delivery_id)},"payload":'
        )
        return head.encode("utf-8") + body + b"}"

    def export_record_head(self) -> dict[str, Any]:
        """The export record without its payload."""
        return {
            "schema_version": SCHEMA_VERSION,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "category": self.category,
            "occurred_at": self.occurred_at,
            "received_at": _iso(self.received_at),
            "source": self.source,
            "delivery_id": self.delivery_id,
        }


@dataclass(frozen=True, slots=True)
class SinkHealth:
    """What ``Sink.health()`` found: ``ok`` and a short reason when not ok."""

    ok: bool
    detail: str = ""


class SinkConfig(BaseModel):
    """Settings every sink has; a sink's own config subclasses this.

    A subclass narrows ``type`` to a ``Literal`` naming the sink type.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        description="Unique name of this sink; its cursor, dead letters and metrics are keyed by it.",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
    )
    type: str = Field(description="Which sink implementation to use.")
    events: list[str] = Field(
        default_factory=lambda: ["*"],
        description='Glob patterns over event types routed to this sink, e.g. "decision_event.*".',
        min_length=1,
    )
    batch_max_events: int = Field(
        default=500, ge=1, le=100_000, description="Most events per send."
    )
    batch_max_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="Most body bytes per send (approximate)."
    )
    batch_max_wait_seconds: float = Field(
        default=0.2, ge=0, le=3600, description="Longest an event waits for its batch to fill."
    )
    retry_initial_seconds: float = Field(default=1.0, gt=0, description="First retry delay.")
    retry_max_seconds: float = Field(default=300.0, gt=0, description="Cap on the retry delay.")
    max_attempts: int = Field(
        default=20, ge=1, description="Attempts before an event is dead-lettered."
    )
    max_age_seconds: float = Field(
        default=7 * 86400,
        gt=0,
        description="An event still undelivered this long after receipt is dead-lettered.",
    )

    @field_validator("events")
    @classmethod
    def _patterns_not_blank(cls, value: list[str]) -> list[str]:
        if any(not p.strip() for p in value):
            raise ValueError("event patterns must not be blank")
        return value


@runtime_checkable
class Sink(Protocol):
    """What the dispatcher drives. One instance per configured sink.

    ``config_model`` names the pydantic model for this sink type; the registry uses
    it to validate the ``[[sinks]]`` table. Sinks classify errors; they never retry
    on their own beyond what a client library does in one call.
    """

    config_model: ClassVar[type[SinkConfig]]

    async def start(self) -> None:
        """Open clients. Raises ``SinkError`` (a bad setting is ``PermanentSinkError``)."""

    async def send(self, batch: Sequence[Event]) -> None:
        """Deliver every event of ``batch`` or raise; return only once confirmed.

        Raises:
            RetryableSinkError: nothing (or nothing known) was delivered; retry.
            PermanentSinkError: the whole batch can never be delivered.
            PartialDeliveryError: only the listed positions failed.
        """

    async def health(self) -> SinkHealth:
        """Check what a send needs (connection, credentials, destination)."""

    async def close(self) -> None:
        """Flush and release clients. Safe to call twice."""
