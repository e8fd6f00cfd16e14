"""Sign and verify BIGHUB webhook deliveries. Standard library only.

Scheme (the same as ``bighub.verify_webhook_signature``)::

    X-BIGHUB-Timestamp: <unix seconds>
    X-BIGHUB-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>

Several ``v1=`` values may be sent, separated by commas and/or spaces, and several
secrets may be configured; one match is enough. ``check_headers`` needs no body, so
ingress refuses a request without well-formed, timely headers before reading its body;
``check_mac`` then runs over the body. ``verify`` is the two in one call. The MAC is computed over the raw
bytes as received (never over re-encoded JSON), and every malformed input, including
non-ASCII headers and non-UTF-8 bodies, ends as a ``SignatureError``, never as a
``ValueError`` or ``UnicodeDecodeError``.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from receiver.errors import HeaderError, MismatchError, TimestampError

__all__ = [
    "SCHEME",
    "Keys",
    "SignedHeaders",
    "check_headers",
    "check_mac",
    "sign",
    "signature_header",
    "verify",
]

SCHEME = "v1"
_MAX_HEADER = 4096  # longer signature headers are refused before any work
_MAX_SIGNATURES = 16
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ONE = re.compile(r"\s*v1=([0-9a-fA-F]{64})\s*", re.ASCII)


def _mac(secret: bytes, timestamp: str, body: bytes) -> str:
    # hmac.digest is the one-shot form (OpenSSL's HMAC, no HMAC object): same bytes.
    return hmac.digest(secret, timestamp.encode("ascii") + b"." + body, "sha256").hex()


def sign(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """The hex HMAC of ``body`` at ``timestamp`` (without the ``v1=`` prefix)."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return _mac(key, str(int(timestamp)), body)


def signature_header(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """The full ``X-BIGHUB-Signature`` value for one secret."""
    return f"{SCHEME}={sign(secret, timestamp, body)}"


def _parse_timestamp(value: str | None) -> tuple[str, int]:
    if value is None:
        raise HeaderError("timestamp header is missing")
    text = value.strip()
    if not _TIMESTAMP.fullmatch(text):
        raise HeaderError("timestamp header is not a unix time in seconds")
    return text, int(text)


def _parse_signatures(value: str | None) -> list[str]:
    if value is None:
        raise HeaderError("signature header is missing")
    if len(value) > _MAX_HEADER:
        raise HeaderError("signature header is too long")
    one = _ONE.fullmatch(value)
    if one is not None:  # the usual header: a single value, no list to split
        return [one[1].lower()]
    found = []
    for part in re.split(r"[,\s]+", value.strip()):
        scheme, sep, digest = part.partition("=")
        if sep and scheme == SCHEME and _HEX64.fullmatch(digest.lower()):
            found.append(digest.lower())
    if not found:
        raise HeaderError(f"signature header holds no well-formed {SCHEME}= value")
    return found[:_MAX_SIGNATURES]


@dataclass(frozen=True, slots=True)
class SignedHeaders:
    """Well-formed signature headers whose timestamp is within the tolerance."""

    timestamp_text: str
    timestamp: int
    signatures: tuple[str, ...]


def check_headers(
    *,
    signature: str | None,
    timestamp: str | None,
    tolerance_seconds: int,
    now: Callable[[], float],
) -> SignedHeaders:
    """Everything about a delivery that can be checked without its body.

    Raises:
        HeaderError: a header is missing or malformed.
        TimestampError: the timestamp is outside the tolerance.
    """
    ts_text, ts = _parse_timestamp(timestamp)
    sent = _parse_signatures(signature)
    if abs(now() - ts) > tolerance_seconds:
        raise TimestampError("timestamp is outside the accepted tolerance")
    return SignedHeaders(ts_text, ts, tuple(sent))


class Keys:
    """The configured secrets, each keyed into an HMAC once: per request only the
    timestamp and body are hashed (a copy of the keyed state skips hashing the key's
    two padded blocks again)."""

    __slots__ = ("_keyed",)

    def __init__(self, secrets: Sequence[bytes]) -> None:
        self._keyed = tuple(hmac.new(secret, digestmod="sha256") for secret in secrets)

    def macs(self, timestamp: str, body: bytes) -> list[str]:
        """The hex MAC of ``body`` at ``timestamp`` under every secret, in order."""
        signed = timestamp.encode("ascii") + b"." + body
        out = []
        for keyed in self._keyed:
            mac = keyed.copy()
            mac.update(signed)
            out.append(mac.hexdigest())
        return out


def check_mac(body: bytes, headers: SignedHeaders, secrets: Sequence[bytes] | Keys) -> None:
    """The MAC over the raw body, against every configured secret.

    Args:
        secrets: the secrets, or the same keyed once (``Keys``), which is cheaper.

    Raises:
        MismatchError: no secret yields any of the sent signatures.
    """
    if isinstance(secrets, Keys):
        expected = secrets.macs(headers.timestamp_text, body)
    else:
        expected = [_mac(secret, headers.timestamp_text, body) for secret in secrets]
    matched = False
    # Compare every pair without early exit so timing does not reveal which matched.
    for mac in expected:
        for candidate in headers.signatures:
            matched |= hmac.compare_digest(mac, candidate)
    if not matched:
        raise MismatchError("no signature matches a configured secret")


def verify(
    body: bytes,
    *,
    signature: str | None,
    timestamp: str | None,
    secrets: Sequence[bytes],
    tolerance_seconds: int,
    now: Callable[[], float],
) -> int:
    """Check a delivery; return its timestamp.

    Args:
        body: the raw request body, exactly as received.
        signature: the signature header value, or ``None`` when absent.
        timestamp: the timestamp header value, or ``None`` when absent.
        secrets: every configured secret (rotation); one match is enough.
        tolerance_seconds: largest accepted distance from ``now()``, past or future.
        now: the clock, injected.

    Raises:
        HeaderError: a header is missing or malformed.
        TimestampError: the timestamp is outside the tolerance.
        MismatchError: no secret yields any of the sent signatures.
    """
    headers = check_headers(
        signature=signature, timestamp=timestamp, tolerance_seconds=tolerance_seconds, now=now
    )
    check_mac(body, headers, secrets)
    return headers.timestamp
