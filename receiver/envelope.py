"""Raw verified body -> ``Envelope``: id, type, category and times.

BIGHUB's envelope schema is not published, so this is tolerant about where the
id, type and time live, and strict about what it will pass on to sinks (ids and
types end up in Kafka keys, topic names and S3 paths).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

from receiver.errors import EnvelopeError

__all__ = ["Envelope", "category_of", "parse_envelope"]

_EVENT_TYPE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_MAX_ID = 256
_UTC_Z = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?Z")
_UTC = "+00:00"
_CATEGORIES = {"decision_event": "decision", "rule": "rule", "approval": "approval"}


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the receiver learned from one verified delivery."""

    event_id: str
    id_origin: str
    event_type: str
    category: str
    occurred_at: str | None
    delivery_id: str | None


def category_of(event_type: str) -> str:
    """``decision_event.*`` -> decision, ``rule.*`` -> rule, ``approval.*`` -> approval."""
    return _CATEGORIES.get(event_type.split(".", 1)[0], "other")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# Built once: json.loads(..., parse_constant=...) would build a decoder per request.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _load_object(body: bytes) -> dict[str, Any]:
    # orjson first (about a quarter of the standard decoder's cost), the standard
    # decoder for whatever orjson refuses or reads differently, so what is accepted
    # and what the envelope gets stay exactly the standard library's: orjson refuses
    # some valid JSON (numbers overflowing a double such as 1e400, lone surrogate
    # escapes, nesting past 1024) and reads integers past 64 bits as floats, which
    # would change an integer id.
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict) or _rounded_id(value):
        value = _load_standard(body)
    if not isinstance(value, dict):
        raise EnvelopeError("invalid_envelope", "body is not a JSON object")
    return value


def _rounded_id(obj: dict[str, Any]) -> bool:
    """An id orjson may have read as a float (the standard decoder keeps it an integer)."""
    return isinstance(obj.get("event_id"), float) or isinstance(obj.get("id"), float)


def _load_standard(body: bytes) -> object:
    try:
        return _DECODER.decode(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise EnvelopeError("invalid_json", "body is not UTF-8 JSON") from None


def _clean_id(value: object) -> str | None:
    """The id exactly as sent, or None when it breaks the id rule.

    The rule (docs/ingress.md): a JSON string or integer of 1-256 characters, used
    byte for byte - nothing is trimmed, so "x", " x" and "x\u2028" are three ids - and
    every character printable: no control (C0, DEL, C1), format (bidi overrides,
    zero-width), separator other than the ASCII space (U+2028, NBSP), surrogate,
    private-use or unassigned code point. Ids end up in log lines, Kafka keys and
    S3 paths, where such characters hide or forge text.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    if isinstance(value, int) and value.bit_length() > 4 * _MAX_ID:  # over 256 digits: no str()
        return None
    text = str(value)
    if not text or len(text) > _MAX_ID or not text.isprintable():
        return None
    return text


def _time(value: object) -> str | None:
    """ISO 8601 or epoch seconds / milliseconds -> UTC ISO 8601; anything else -> None.

    Hostile values (a 400-digit number, year 1 with a +14:00 offset) overflow inside
    ``math``/``datetime``; every such error means "no usable time", never a 500.
    """
    try:
        return _parse_time(value)
    except (OverflowError, OSError, ValueError):
        return None


def _parse_time(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            return None
        seconds = value / 1000 if abs(value) > 1e11 else value  # epoch milliseconds
        moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    elif isinstance(value, str) and 0 < len(value) <= 64:
        if _UTC_Z.fullmatch(value):
            # The common form (2026-11-24T08:00:00Z) is already UTC: the datetime only
            # checks that the date and time exist (no February 30th); the text is kept,
            # its fraction cut to milliseconds as isoformat(timespec="milliseconds") does.
            datetime.fromisoformat(value[:-1])
            return f"{value[:19]}.{(value[20:-1] + '000')[:3]}{_UTC}"
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
    else:
        return None
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def parse_envelope(body: bytes, headers: Mapping[str, str], names: Mapping[str, str]) -> Envelope:
    """Read the envelope of a verified body.

    Args:
        body: raw bytes, already verified.
        headers: request headers (case-insensitive mapping).
        names: header names for ``event_id``, ``event_type``, ``delivery_id``.

    Raises:
        EnvelopeError: not a JSON object, no usable event type, or an unusable id.
    """
    obj = _load_object(body)
    event_type_raw = obj.get("event_type", obj.get("type", headers.get(names["event_type"])))
    if not isinstance(event_type_raw, str) or not _EVENT_TYPE.fullmatch(event_type_raw):
        raise EnvelopeError(
            "invalid_event_type",
            "no event type (event_type, type or header), or it has characters outside "
            "letters, digits and _ . : -, or is over 128 long",
        )
    event_id, origin = None, "sha256"
    for origin_name, raw in (
        ("body.event_id", obj.get("event_id")),
        ("body.id", obj.get("id")),
        ("header", headers.get(names["event_id"])),
    ):
        if raw is not None:
            event_id = _clean_id(raw)
            if event_id is None:
                raise EnvelopeError(
                    "invalid_event_id", f"{origin_name} is not a printable id of 1-{_MAX_ID} chars"
                )
            origin = origin_name
            break
    if event_id is None:
        event_id = hashlib.sha256(body).hexdigest()
    occurred = None
    for key in ("created_at", "timestamp", "occurred_at"):
        if key in obj:
            occurred = _time(obj[key])
            if occurred is not None:
                break
    delivery = _clean_id(headers.get(names["delivery_id"]))
    return Envelope(
        event_id=event_id,
        id_origin=origin,
        event_type=event_type_raw,
        category=category_of(event_type_raw),
        occurred_at=occurred,
        delivery_id=delivery,
    )
