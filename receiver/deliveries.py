"""Reading BIGHUB's webhook deliveries answer, whatever its shape.

BIGHUB does not publish the answer of ``webhooks.deliveries``; this module reads
what it can and counts what it cannot, and never raises: the answer comes from
the network and the caller is the receiver's event loop. Ids it yields are safe to
put into an API path.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["ID_PATTERN", "Delivery", "ParsedDeliveries", "parse_deliveries"]

# Delivery and webhook ids are put into API paths: no "/", "?", "#", spaces or "..".
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_MAX_EVENT_ID = 256  # the envelope's limit (receiver/envelope.py)
_MAX_EMBEDDED_JSON = 1024 * 1024
_LIST_KEYS = ("deliveries", "items", "data", "results")
_FAILED = frozenset(
    {"failed", "failure", "error", "errored", "dead", "dead_letter", "dead_lettered"}
)
_EVENT_HOLDERS = ("payload", "event", "body", "data")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery as BIGHUB reported it."""

    delivery_id: str
    failed: bool
    status: str  # as reported, shortened, for people
    event_id: str | None


@dataclass(frozen=True, slots=True)
class ParsedDeliveries:
    deliveries: tuple[Delivery, ...]
    skipped: int  # entries that could not be read
    problem: str | None  # the answer as a whole could not be read


def _entries(answer: object) -> tuple[list[Any] | None, str | None]:
    if isinstance(answer, list):
        return answer, None
    if not isinstance(answer, dict):
        return None, f"the answer is a {type(answer).__name__}, not a list or an object"
    for key in _LIST_KEYS:
        value = answer.get(key)
        if isinstance(value, list):
            return value, None
        if isinstance(value, dict):  # e.g. {"data": {"items": [...]}}
            for inner in _LIST_KEYS:
                if isinstance(value.get(inner), list):
                    return value[inner], None
    if not answer:
        # The client turns a non-JSON or broken answer into {}.
        return None, "the answer is empty or not JSON"
    keys = ", ".join(sorted(str(k)[:32] for k in answer)[:10])
    return None, f"no deliveries list in the answer (keys: {keys})"


def _delivery_id(entry: dict[Any, Any]) -> str | None:
    for key in ("delivery_id", "id"):
        value = entry.get(key)
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            continue
        text = str(value).strip()
        return text if ID_PATTERN.fullmatch(text) else None
    return None


def _clean_event_id(value: object) -> str | None:
    # The envelope's rules (receiver/envelope.py), so a lookup finds what ingress stored.
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value).strip()
    if not text or len(text) > _MAX_EVENT_ID or not text.isprintable():
        return None
    return text


def _holder(value: object) -> dict[Any, Any] | None:
    if isinstance(value, str) and len(value) <= _MAX_EMBEDDED_JSON and value.startswith("{"):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return None
    return value if isinstance(value, dict) else None


def _event_id(entry: dict[Any, Any]) -> str | None:
    found = _clean_event_id(entry.get("event_id"))
    for key in _EVENT_HOLDERS:
        if found is not None:
            break
        inner = _holder(entry.get(key))
        if inner is not None:
            # The envelope's order: body event_id, then body id.
            found = _clean_event_id(inner.get("event_id")) or _clean_event_id(inner.get("id"))
    return found


def _status(entry: dict[Any, Any]) -> tuple[bool, str]:
    failed = False
    shown = "?"
    for key in ("status", "state"):
        value = entry.get(key)
        if isinstance(value, str):
            shown = value.strip()[:24] or "?"
            failed = value.strip().lower() in _FAILED
            break
    success = entry.get("success")
    if success is False:
        failed = True
        shown = shown if shown != "?" else "success=false"
    elif success is True and shown == "?":
        shown = "success=true"
    return failed, shown


def parse_deliveries(answer: object) -> ParsedDeliveries:
    """Read a ``deliveries`` answer whatever its shape; never raises.

    Accepted: a list of deliveries, or an object holding one under ``deliveries``,
    ``items``, ``data`` or ``results`` (also one level deeper). A delivery is an
    object with ``delivery_id`` or ``id``; it is failed when ``status`` (or
    ``state``) is failed / error / dead (and close spellings) or ``success`` is
    false; its event id comes from ``event_id`` or the ``event_id`` / ``id`` of an
    embedded ``payload`` / ``event`` / ``body`` / ``data`` (object or JSON text).
    """
    entries, problem = _entries(answer)
    if entries is None:
        return ParsedDeliveries((), 0, problem)
    out: list[Delivery] = []
    skipped = 0
    for entry in entries:
        delivery_id = _delivery_id(entry) if isinstance(entry, dict) else None
        if delivery_id is None or not isinstance(entry, dict):
            skipped += 1
            continue
        failed, shown = _status(entry)
        out.append(Delivery(delivery_id, failed, shown, _event_id(entry)))
    return ParsedDeliveries(tuple(out), skipped, None)
