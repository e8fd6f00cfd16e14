"""The receiver's exception tree.

    ReceiverError
    ├── ConfigError           settings could not be read or validated; ``problems``
    │                         holds one "key: message" line each (never a secret)
    ├── SignatureError        a delivery failed verification (see signatures.py);
    │   ├── HeaderError       missing or malformed signature / timestamp header
    │   ├── TimestampError    timestamp outside the tolerance
    │   └── MismatchError     no configured secret produces a sent signature
    ├── EnvelopeError         the verified body is not a usable BIGHUB event (400)
    └── StoreError            the spool cannot take the write now (503)
        └── QuotaExceededError  the spool is over its quota (503)

A duplicate delivery is a result (``IngestResult``), not an exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sinks._extras import MissingExtraError

__all__ = [
    "ConfigError",
    "EnvelopeError",
    "HeaderError",
    "MismatchError",
    "QuotaExceededError",
    "ReceiverError",
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


class StoreError(ReceiverError):
    """The store cannot take writes now; the client should retry later."""


class QuotaExceededError(StoreError):
    """The spool holds as much undelivered data as it is allowed to."""
