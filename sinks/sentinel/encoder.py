"""Events -> Logs Ingestion rows and call bodies. Pure: no I/O, no clock.

Two row shapes, one per input stream of the data collection rule (deploy/sentinel/):

- decisions, approvals and other events -> ``DECISION_COLUMNS``, stored as they come in
  the custom table ``BighubDecisions_CL``;
- rule changes -> ``RULE_COLUMNS``, which the DCR transform maps onto the ASIM audit
  table ``ASimAuditEventLogs`` (or stores as they come in ``BighubRuleChanges_CL``).

``EventId`` is in every row, so KQL can find and drop repeats (delivery is at least once).
The summary columns (Actor, Result, RiskScore...) are read tolerantly from the BIGHUB
body, whose schema is not published; ``Payload`` carries the body itself, unless it is
over what a Log Analytics field holds (64 KB, longer values are cut by the service):
then ``Payload`` is null and ``PayloadTruncated`` true, so no half JSON is ever stored.

A call body is a JSON array of rows, gzip compressed. The API takes at most 1 MB per
call, compressed and uncompressed (Azure Monitor service limits), so calls are planned on
the uncompressed size.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, NamedTuple

import orjson

from sinks.base import Event
from sinks.base import _iso as export_time

__all__ = [
    "DECISION_COLUMNS",
    "PAYLOAD_MAX_BYTES",
    "RULE_COLUMNS",
    "TEXT_MAX_CHARS",
    "CallPacker",
    "Row",
    "array_bytes",
    "body_for",
    "decision_row",
    "encode_row",
    "iso_time",
    "plan_calls",
    "row_for",
    "rule_row",
]

# Column name -> stream declaration type. The DCR and table templates in
# deploy/sentinel/ must declare exactly these (a test holds them to it).
DECISION_COLUMNS: Mapping[str, str] = {
    "TimeGenerated": "datetime",
    "EventId": "string",
    "EventType": "string",
    "Category": "string",
    "Source": "string",
    "Actor": "string",
    "Action": "string",
    "Domain": "string",
    "Allowed": "boolean",
    "Result": "string",
    "RiskScore": "real",
    "RuleId": "string",
    "Payload": "dynamic",
    "PayloadTruncated": "boolean",
    "ReceivedAt": "datetime",
    "DeliveryId": "string",
}
RULE_COLUMNS: Mapping[str, str] = {
    "TimeGenerated": "datetime",
    "EventId": "string",
    "EventType": "string",
    "Source": "string",
    "Actor": "string",
    "AuditEventType": "string",
    "Operation": "string",
    "Object": "string",
    "ObjectId": "string",
    "ObjectType": "string",
    "OldValue": "string",
    "NewValue": "string",
    "Payload": "dynamic",
    "PayloadTruncated": "boolean",
    "ReceivedAt": "datetime",
    "DeliveryId": "string",
}

# Log Analytics cuts field values over 64 KB; a cut JSON payload would be unreadable.
PAYLOAD_MAX_BYTES = 64_000
# Summary columns are for filtering; the whole value stays in Payload.
TEXT_MAX_CHARS = 4096

_ALLOWED = frozenset({"allowed", "allow", "approved", "approve", "permitted", "pass", "passed"})
_DENIED = frozenset({"blocked", "block", "denied", "deny", "rejected", "reject", "refused"})
# rule.<verb> -> the ASIM audit EventType
_AUDIT_TYPES = {
    "created": "Create",
    "deleted": "Delete",
    "enabled": "Enable",
    "disabled": "Disable",
    "patch_applied": "Set",
    "updated": "Set",
    "changed": "Set",
}
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_ASCII_ENCODER = json.JSONEncoder(separators=(",", ":"))


class Row(NamedTuple):
    """One event's row: the stream it goes to and its JSON object as UTF-8 bytes.

    Immutable like a frozen dataclass, without its ``object.__setattr__`` per field at
    construction (one row per event on the drain path).
    """

    stream: str
    data: bytes


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# "YYYY-MM-DDTHH:MM:SS" prefixes of event times already checked to be valid and written
# the way ``datetime.isoformat`` writes them (bounded: cleared when full).
_CANONICAL: dict[str, bool] = {}
_CANONICAL_MAX = 4096
# What an event time may hold after its seconds and still take the fast path: the
# fractions both Python 3.10 and 3.11+ read, then UTC as "Z", "+00:00" or nothing (naive
# times are taken as UTC).
_UTC_SUFFIXES = ("Z", "+00:00", "")


def iso_time(epoch: float) -> str:
    """UTC ISO 8601 with milliseconds and ``Z`` (what a ``datetime`` column parses).

    The export record's received_at text (``datetime.fromtimestamp`` to the millisecond,
    with the whole second cached), ``Z`` for ``+00:00``: once per row on the drain path.
    """
    return f"{export_time(epoch)[:-6]}Z"


def _canonical_prefix(prefix: str) -> bool:
    known = _CANONICAL.get(prefix)
    if known is None:
        try:
            known = datetime.fromisoformat(prefix).isoformat() == prefix
        except ValueError:
            known = False
        if len(_CANONICAL) >= _CANONICAL_MAX:
            _CANONICAL.clear()
        _CANONICAL[prefix] = known
    return known


def _utc_fast(text: str) -> str | None:
    """``text`` as TimeGenerated when it is already a UTC time written the usual way
    (seconds, then 3 or 6 fraction digits or none, then Z / +00:00 / nothing); else None."""
    rest = text[19:]
    for suffix in _UTC_SUFFIXES:
        if rest.endswith(suffix):
            fraction = rest[: len(rest) - len(suffix)]
            break
    if fraction:
        if len(fraction) not in (4, 7) or fraction[0] != ".":
            return None
        digits = fraction[1:]
        if not (digits.isascii() and digits.isdigit()):
            return None
        digits = digits[:3]  # isoformat cuts to milliseconds, it does not round
    else:
        digits = "000"
    prefix = text[:19]
    return f"{prefix}.{digits}Z" if _canonical_prefix(prefix) else None


def _time_generated(event: Event, received: str) -> str:
    if event.occurred_at:
        fast = _utc_fast(event.occurred_at)
        if fast is not None:
            return fast
        try:
            moment = datetime.fromisoformat(event.occurred_at.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            return _iso(moment.astimezone(timezone.utc))
        except (ValueError, OverflowError):  # unreadable, or out of range once in UTC
            pass
    return received


class _Fields:
    """The body's top-level object and its ``data`` object, read key by key."""

    __slots__ = ("nested", "top")

    def __init__(self, payload: Any) -> None:
        # The parsers give dicts: a plain type check is much cheaper than an ABC's.
        self.top: dict[str, Any] = payload if isinstance(payload, dict) else {}
        nested = self.top.get("data")
        self.nested: dict[str, Any] = nested if isinstance(nested, dict) else {}

    def pick(self, *names: str) -> Any:
        """The first of ``names`` present (not null), at the top, else in ``data``."""
        top = self.top
        for name in names:
            value = top.get(name)
            if value is not None:
                return value
        nested = self.nested
        if nested:
            for name in names:
                value = nested.get(name)
                if value is not None:
                    return value
        return None

    def text(self, value: Any, *keys: str) -> str | None:
        """A summary string: strings as they are, objects by one of ``keys`` or as JSON."""
        if value is None:
            return None
        if isinstance(value, str):
            return value[:TEXT_MAX_CHARS]
        if isinstance(value, dict):
            for key in keys:
                inner = value.get(key)
                if isinstance(inner, (str, int, float)) and not isinstance(inner, bool):
                    return self.text(inner)
        if isinstance(value, bool):
            return "true" if value else "false"
        return _ASCII_ENCODER.encode(value)[:TEXT_MAX_CHARS]


def _number(value: Any) -> float | None:
    # The same float whichever parser read it: both round big integers correctly.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if number == number and abs(number) != float("inf") else None


def _allowed(fields: _Fields, result: str | None) -> bool | None:
    flag = fields.pick("allowed", "is_allowed")
    if isinstance(flag, bool):
        return flag
    if result is not None:
        word = result.strip().lower()
        if word in _ALLOWED:
            return True
        if word in _DENIED:
            return False
    return None


def _payload_value(event: Event) -> tuple[bytes | None, bool]:
    """The Payload column as JSON bytes (the stored body spliced in when it is one line)."""
    body = event.body.strip(b" \t\r\n")
    if len(body) > PAYLOAD_MAX_BYTES:
        return None, True
    if b"\n" in body or b"\r" in body:
        # Re-encoded from the exact parse: orjson's floats for big integers would change it.
        body = _ASCII_ENCODER.encode(event.payload()).encode("ascii")
        if len(body) > PAYLOAD_MAX_BYTES:
            return None, True
    return body, False


def _dump(head: dict[str, Any], payload_json: bytes | None) -> bytes:
    """``head`` plus ``"Payload": <payload_json>`` as one compact JSON object."""
    try:
        prefix = orjson.dumps(head)
    except TypeError:  # a lone surrogate escape copied from the body (orjson refuses it)
        prefix = _ASCII_ENCODER.encode(head).encode("ascii")
    value = payload_json if payload_json is not None else b"null"
    return prefix[:-1] + b',"Payload":' + value + b"}"


def decision_row(event: Event) -> bytes:
    """The ``DECISION_COLUMNS`` row of a decision, approval or other event."""
    # ``payload()`` reads with orjson and keeps integers over 64 bits exact (sinks._json).
    fields = _Fields(event.payload())
    text = fields.text
    result = text(fields.pick("decision", "result", "outcome", "status", "verdict"), "value")
    payload_json, truncated = _payload_value(event)
    received = iso_time(event.received_at)
    head = {
        "TimeGenerated": _time_generated(event, received),
        "EventId": event.event_id,
        "EventType": event.event_type,
        "Category": event.category,
        "Source": event.source,
        "Actor": text(fields.pick("actor", "agent", "user"), "id", "name", "email"),
        "Action": text(fields.pick("action", "tool", "operation"), "tool", "name", "type"),
        "Domain": text(fields.pick("domain")),
        "Allowed": _allowed(fields, result),
        "Result": result,
        "RiskScore": _number(fields.pick("risk_score", "riskScore", "risk")),
        "RuleId": text(fields.pick("rule_id", "ruleId", "rule"), "id", "rule_id"),
        "PayloadTruncated": truncated,
        "ReceivedAt": received,
        "DeliveryId": event.delivery_id,
    }
    return _dump(head, payload_json)


def rule_row(event: Event) -> bytes:
    """The ``RULE_COLUMNS`` row of a rule change (ASIM audit vocabulary)."""
    fields = _Fields(event.payload())
    text = fields.text
    verb = event.event_type.split(".", 1)[1] if "." in event.event_type else ""
    rule = fields.pick("rule")
    rule_id = text(fields.pick("rule_id", "ruleId"), "id") or text(rule, "id", "rule_id")
    name = text(fields.pick("rule_name", "name"), "name") or text(rule, "name", "id")
    payload_json, truncated = _payload_value(event)
    received = iso_time(event.received_at)
    head = {
        "TimeGenerated": _time_generated(event, received),
        "EventId": event.event_id,
        "EventType": event.event_type,
        "Source": event.source,
        "Actor": text(fields.pick("actor", "user", "changed_by"), "id", "name", "email"),
        "AuditEventType": _AUDIT_TYPES.get(verb, "Other"),
        "Operation": event.event_type,
        "Object": name or rule_id,
        "ObjectId": rule_id,
        "ObjectType": "Policy Rule",
        "OldValue": text(fields.pick("old_value", "previous", "before", "old")),
        "NewValue": text(fields.pick("new_value", "patch", "after", "new", "changes")),
        "PayloadTruncated": truncated,
        "ReceivedAt": received,
        "DeliveryId": event.delivery_id,
    }
    return _dump(head, payload_json)


def row_for(event: Event, streams: Mapping[str, str]) -> Row:
    """The row of ``event`` for the stream its category maps to in ``streams``.

    Raises:
        ValueError: the stored body is not JSON (ingress never stores such a body).
    """
    stream = streams.get(event.category, streams["other"])
    data = rule_row(event) if event.category == "rule" else decision_row(event)
    return Row(stream, data)


def encode_row(row: Mapping[str, Any]) -> bytes:
    """A row given as a mapping, in the same compact form (for probes and tests)."""
    return _ENCODER.encode(row).encode("utf-8")


def array_bytes(rows: Sequence[bytes]) -> int:
    """Size of ``[row,row,...]``: what the API counts as the uncompressed call."""
    return 2 + sum(len(r) for r in rows) + max(0, len(rows) - 1)


def body_for(rows: Sequence[bytes], level: int) -> bytes:
    """The gzip JSON array of ``rows`` (fixed mtime: the same rows give the same bytes)."""
    return gzip.compress(b"[" + b",".join(rows) + b"]", compresslevel=level, mtime=0)


class CallPacker:
    """Row positions, added in order, packed into calls of at most ``max_bytes``
    uncompressed: a call is closed when the next row would not fit (greedy, in order)."""

    __slots__ = ("current", "max_bytes", "size")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.current: list[int] = []
        self.size = 2  # "[" and "]"

    def fits(self, n: int) -> bool:
        """Whether a row of ``n`` bytes fits in a call at all."""
        return n + 2 <= self.max_bytes

    def add(self, pos: int, n: int) -> list[int] | None:
        """Add a row that ``fits``; return the call it closed, if it closed one."""
        closed = None
        if self.current and self.size + n + 1 > self.max_bytes:
            closed, self.current, self.size = self.current, [], 2
        self.size += n + (1 if self.current else 0)
        self.current.append(pos)
        return closed

    def flush(self) -> list[int] | None:
        """The call still open, if any rows are in it."""
        closed, self.current, self.size = self.current or None, [], 2
        return closed


def plan_calls(rows: Sequence[bytes], max_bytes: int) -> tuple[list[list[int]], list[int]]:
    """Split row positions (in order) into calls of at most ``max_bytes`` uncompressed.

    Returns the calls and the positions of rows too large to go in any call.
    """
    packer = CallPacker(max_bytes)
    calls: list[list[int]] = []
    oversize: list[int] = []
    for pos, row in enumerate(rows):
        if not packer.fits(len(row)):
            oversize.append(pos)
        elif (closed := packer.add(pos, len(row))) is not None:
            calls.append(closed)
    if (last := packer.flush()) is not None:
        calls.append(last)
    return calls, oversize
