"""The HEC emulator's vocabulary, from Splunk's published protocol: the answer codes,
what it stores per event and per request, its channels (see ``tests.fakes.hec``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.responses import JSONResponse

__all__ = [
    "CODES",
    "TOKEN",
    "Channel",
    "Indexed",
    "Pending",
    "Reject",
    "RequestRecord",
    "Token",
    "hec_answer",
]


TOKEN = "11111111-2222-3333-4444-555555555555"

CODES: dict[int, tuple[str, int]] = {
    0: ("Success", 200),
    1: ("Token disabled", 403),
    2: ("Token is required", 401),
    3: ("Invalid authorization", 401),
    4: ("Invalid token", 403),
    5: ("No data", 400),
    6: ("Invalid data format", 400),
    7: ("Incorrect index", 400),
    8: ("Internal server error", 500),
    9: ("Server is busy", 503),
    10: ("Data channel is missing", 400),
    11: ("Invalid data channel", 400),
    12: ("Event field is required", 400),
    13: ("Event field cannot be blank", 400),
    14: ("ACK is disabled", 400),
    15: ("Error in handling indexed fields", 400),
    16: ("Query string authorization is not enabled", 400),
    17: ("HEC is healthy", 200),
    18: ("HEC is unhealthy, queues are full", 503),
    19: ("HEC is unhealthy, ack service unavailable", 503),
    20: ("HEC is unhealthy, queues are full, ack service unavailable", 503),
    21: ("Invalid token", 400),
    22: ("Token disabled", 400),
}


@dataclass
class Token:
    value: str
    enabled: bool = True
    ack: bool = False
    indexes: set[str] | None = None  # None: any index


@dataclass(frozen=True)
class Indexed:
    """One event as Splunk would store it."""

    event: Any
    time: Any
    index: str
    sourcetype: str | None
    source: str | None
    host: str | None
    fields: dict[str, Any]
    channel: str | None
    ack_id: int | None

    @property
    def event_id(self) -> str | None:
        value = self.fields.get("event_id")
        if value is None and isinstance(self.event, dict):
            value = self.event.get("event_id")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class RequestRecord:
    path: str
    status: int
    code: int | None
    events: int
    channel: str | None
    ack_id: int | None = None
    acks_asked: tuple[int, ...] = ()
    gzip: bool = False


@dataclass
class Pending:
    events: list[Indexed]
    ready_at: float | None  # None: paused until release_acks()
    lost: bool = False


@dataclass
class Channel:
    next_id: int = 0
    pending: dict[int, Pending] = field(default_factory=dict)
    ready: set[int] = field(default_factory=set)  # indexed, ack not yet reported


class Reject(Exception):
    """HEC's refusal: a code, and for a batch the first bad event and those before it."""

    def __init__(
        self, code: int, invalid_event: int | None = None, taken: list[Indexed] | None = None
    ) -> None:
        super().__init__(code)
        self.code, self.invalid_event, self.taken = code, invalid_event, taken or []


def hec_answer(code: int, **extra: Any) -> JSONResponse:
    text, status = CODES[code]
    return JSONResponse({"text": text, "code": code, **extra}, status_code=status)
