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
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sinks.base import Event

__all__ = [
    "DECISION_COLUMNS",
    "PAYLOAD_MAX_BYTES",
    "RULE_COLUMNS",
    "TEXT_MAX_CHARS",
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


@dataclass(frozen=True, slots=True)
class Row:
    """One event's row: the stream it goes to and its JSON object as UTF-8 bytes."""

    stream: str
    data: bytes


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_time(epoch: float) -> str:
    """UTC ISO 8601 with milliseconds and ``Z`` (what a ``datetime`` column parses)."""
    return _iso(datetime.fromtimestamp(epoch, tz=timezone.utc))


def _time_generated(event: Event) -> str:
    if event.occurred_at:
        try:
            moment = datetime.fromisoformat(event.occurred_at.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            return _iso(moment.astimezone(timezone.utc))
        except (ValueError, OverflowError):  # unreadable, or out of range once in UTC
            pass
    return iso_time(event.received_at)


class _Fields:
    """The body's top-level object and its ``data`` object, read key by key."""

    __slots__ = ("nested", "top")

    def __init__(self, payload: Any) -> None:
        # json.loads gives dicts: a plain type check is much cheaper than an ABC's.
        self.top: dict[str, Any] = payload if isinstance(payload, dict) else {}
        nested = self.top.get("data")
        self.nested: dict[str, Any] = nested if isinstance(nested, dict) else {}

    def pick(self, *names: str) -> Any:
        """The first of ``names`` present (not null), at the top, else in ``data``."""
        for scope in (self.top, self.nested):
            for name in names:
                value = scope.get(name)
                if value is not None:
                    return value
        return None


def _text(value: Any, *keys: str) -> str | None:
    """A summary string: strings as they are, objects by one of ``keys`` or as JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value[:TEXT_MAX_CHARS]
    if isinstance(value, dict):
        for key in keys:
            inner = value.get(key)
            if isinstance(inner, (str, int, float)) and not isinstance(inner, bool):
                return _text(inner)
    if isinstance(value, bool):
        return "true" if value else "false"
    return _ASCII_ENCODER.encode(value)[:TEXT_MAX_CHARS]


def _number(value: Any) -> float | None:
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


def _payload_value(event: Event, payload: Any) -> tuple[bytes | None, bool]:
    """The Payload column as JSON bytes (the stored body spliced in when it is one line)."""
    body = event.body.strip(b" \t\r\n")
    if len(body) > PAYLOAD_MAX_BYTES:
        return None, True
    if b"\n" in body or b"\r" in body:
        body = _ASCII_ENCODER.encode(payload).encode("ascii")
        if len(body) > PAYLOAD_MAX_BYTES:
            return None, True
    return body, False


def _dump(head: dict[str, Any], payload_json: bytes | None) -> bytes:
    """``head`` plus ``"Payload": <payload_json>`` as one compact JSON object."""
    try:
        prefix = _ENCODER.encode(head).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate escape copied from the body
        prefix = _ASCII_ENCODER.encode(head).encode("ascii")
    value = payload_json if payload_json is not None else b"null"
    return prefix[:-1] + b',"Payload":' + value + b"}"


def _common(event: Event) -> dict[str, Any]:
    return {
        "TimeGenerated": _time_generated(event),
        "EventId": event.event_id,
        "EventType": event.event_type,
    }


def decision_row(event: Event) -> bytes:
    """The ``DECISION_COLUMNS`` row of a decision, approval or other event."""
    payload = event.payload()
    fields = _Fields(payload)
    result = _text(fields.pick("decision", "result", "outcome", "status", "verdict"), "value")
    payload_json, truncated = _payload_value(event, payload)
    head = {
        **_common(event),
        "Category": event.category,
        "Source": event.source,
        "Actor": _text(fields.pick("actor", "agent", "user"), "id", "name", "email"),
        "Action": _text(fields.pick("action", "tool", "operation"), "tool", "name", "type"),
        "Domain": _text(fields.pick("domain")),
        "Allowed": _allowed(fields, result),
        "Result": result,
        "RiskScore": _number(fields.pick("risk_score", "riskScore", "risk")),
        "RuleId": _text(fields.pick("rule_id", "ruleId", "rule"), "id", "rule_id"),
        "PayloadTruncated": truncated,
        "ReceivedAt": iso_time(event.received_at),
        "DeliveryId": event.delivery_id,
    }
    return _dump(head, payload_json)


def rule_row(event: Event) -> bytes:
    """The ``RULE_COLUMNS`` row of a rule change (ASIM audit vocabulary)."""
    payload = event.payload()
    fields = _Fields(payload)
    verb = event.event_type.split(".", 1)[1] if "." in event.event_type else ""
    rule = fields.pick("rule")
    rule_id = _text(fields.pick("rule_id", "ruleId"), "id") or _text(rule, "id", "rule_id")
    name = _text(fields.pick("rule_name", "name"), "name") or _text(rule, "name", "id")
    payload_json, truncated = _payload_value(event, payload)
    head = {
        **_common(event),
        "Source": event.source,
        "Actor": _text(fields.pick("actor", "user", "changed_by"), "id", "name", "email"),
        "AuditEventType": _AUDIT_TYPES.get(verb, "Other"),
        "Operation": event.event_type,
        "Object": name or rule_id,
        "ObjectId": rule_id,
        "ObjectType": "Policy Rule",
        "OldValue": _text(fields.pick("old_value", "previous", "before", "old")),
        "NewValue": _text(fields.pick("new_value", "patch", "after", "new", "changes")),
        "PayloadTruncated": truncated,
        "ReceivedAt": iso_time(event.received_at),
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


def plan_calls(rows: Sequence[bytes], max_bytes: int) -> tuple[list[list[int]], list[int]]:
    """Split row positions (in order) into calls of at most ``max_bytes`` uncompressed.

    Returns the calls and the positions of rows too large to go in any call.
    """
    calls: list[list[int]] = []
    oversize: list[int] = []
    current: list[int] = []
    size = 2  # "[" and "]"
    for pos, row in enumerate(rows):
        n = len(row)
        if n + 2 > max_bytes:
            oversize.append(pos)
            continue
        extra = n + (1 if current else 0)
        if current and size + extra > max_bytes:
            calls.append(current)
            current, size, extra = [], 2, n
        current.append(pos)
        size += extra
    if current:
        calls.append(current)
    return calls, oversize
