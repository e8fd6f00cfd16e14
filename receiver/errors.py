"""The receiver's exception tree.

    ReceiverError
    ├── ConfigError           settings could not be read or validated; ``problems``
    │                         holds one "key: message" line each (never a secret)
    ├── SignatureError        a delivery failed verification (see signatures.py);
    │   ├── HeaderError       missing or malformed signature / timestamp header
    │   ├── TimestampError    timestamp outside the tolerance
    │   └── MismatchError     no configured secret produces a sent signature
    ├── EnvelopeError         the verified body is not a usable BIGHUB event (400)
    ├── RequestBodyError      the request body cannot be read; raised by the edge's
    │   │                     ``receive`` into the application, which answers
    │   │                     ``status`` / ``code`` and closes the connection
    │   ├── BodyTimeoutError    not all of it arrived within the body timeout (408)
    │   ├── BodyTooLargeError   more bytes on the wire than a body within the limit needs
    │   │                       (chunk framing and trailers included) (413)
    │   └── MalformedBodyError  the chunked framing or trailers are not valid HTTP (400)
    └── StoreError            the spool cannot take the write now (503)
        ├── QuotaExceededError  the spool is over its quota (503)
        ├── OverloadedError     the ingest queue is full, or a request waited past its
        │                       deadline (503 at once; the sender retries)
        ├── EventRefusedError   the database refuses this one event (say, a character
        │                       its encoding cannot hold); the rest of its group commits
        ├── LeaseLostError      another dispatcher owns the sink's cursor now: nothing
        │                       was written, the loser stops its send loop
        ├── CursorMissingError  the sink has no cursor (it was retired): not exported
        └── DeadLetterBudgetError  the dead letters are at their byte limit: the sink
                                holds (its events stay in the spool) until they are
                                retried or purged

A duplicate delivery is a result (``IngestResult``), not an exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sinks._extras import MissingExtraError

__all__ = [
    "BodyTimeoutError",
    "BodyTooLargeError",
    "ConfigError",
    "CursorMissingError",
    "DeadLetterBudgetError",
    "EnvelopeError",
    "EventRefusedError",
    "HeaderError",
    "LeaseLostError",
    "MalformedBodyError",
    "MismatchError",
    "OverloadedError",
    "QuotaExceededError",
    "ReceiverError",
    "RequestBodyError",
    "SignatureError",
    "StoreError",
    "TimestampError",
]


class ReceiverError(Exception):
    """Base of the receiver's own errors."""


class ConfigError(ReceiverError):
    """``problems``: one "key: message" line each. ``missing``: the problems that are
    an optional dependency not installed, as (key, error); the CLI gives those their
    own exit code when they are the only problems."""

    def __init__(
        self,
        problems: Sequence[str],
        *,
        missing: Sequence[tuple[str, MissingExtraError]] = (),
    ) -> None:
        self.problems = list(problems)
        self.missing = list(missing)
        super().__init__("; ".join(self.problems))


class SignatureError(ReceiverError):
    """Verification failed. ``code`` is the stable error code sent to the client."""

    code = "invalid_signature"


class HeaderError(SignatureError):
    code = "missing_or_malformed_signature"


class TimestampError(SignatureError):
    code = "timestamp_out_of_tolerance"


class MismatchError(SignatureError):
    code = "signature_mismatch"


class EnvelopeError(ReceiverError):
    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        self.detail = detail
        super().__init__(detail)


class RequestBodyError(ReceiverError):
    """The request body cannot be read; answer ``status`` / ``code`` and close."""

    status = 400
    code = "bad_request"
    detail = "the request body could not be read"

    def __init__(self) -> None:
        super().__init__(self.detail)


class BodyTimeoutError(RequestBodyError):
    status, code, detail = 408, "body_timeout", "the body did not arrive in time"


class BodyTooLargeError(RequestBodyError):
    status, code, detail = 413, "body_too_large", "the body is larger than the limit"


class MalformedBodyError(RequestBodyError):
    status, code, detail = 400, "bad_request", "the body's framing is not valid HTTP/1.1"


class StoreError(ReceiverError):
    """The store cannot take writes now; the client should retry later."""


class QuotaExceededError(StoreError):
    """The spool holds as much undelivered data as it is allowed to."""


class OverloadedError(StoreError):
    """Admission control refused or gave up on the request; nothing was (or will be
    known to be) stored for it, so the sender must retry (a retry is deduplicated)."""


class EventRefusedError(StoreError):
    """The database refused this event alone; it is not stored."""


class LeaseLostError(StoreError):
    """The cursor's lease belongs to another dispatcher (or expired): nothing written."""


class DeadLetterBudgetError(StoreError):
    """New dead letters would exceed ``store.max_dead_letter_bytes``; nothing written."""


class CursorMissingError(StoreError):
    """The sink has no cursor: it was retired (``retire-sink``) while this process still
    runs it. Its events are not exported here until it is configured again from start."""
