"""Events and payloads for the OCSF tests."""

from __future__ import annotations

import json
from typing import Any

from sinks.base import Event

VERSIONS = ("1.1.0", "1.7.0", "1.8.0")
OCCURRED = "2026-03-01T12:00:00.250+00:00"
OCCURRED_MS = 1772366400250

_CATEGORIES = {"decision_event": "decision", "rule": "rule", "approval": "approval"}


def category(event_type: str) -> str:
    return _CATEGORIES.get(event_type.split(".", 1)[0], "other")


def event_from(
    payload: dict[str, Any] | bytes,
    *,
    event_type: str | None = None,
    seq: int = 7,
    event_id: str = "evt_1",
    occurred_at: str | None = OCCURRED,
    id_origin: str = "body.event_id",
) -> Event:
    """A stored event as the receiver hands it to a sink."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    parsed = json.loads(body)
    kind = event_type or str(parsed.get("event_type", "decision_event.created"))
    return Event(
        seq=seq,
        event_id=event_id,
        id_origin=id_origin,
        event_type=kind,
        category=category(kind),
        occurred_at=occurred_at,
        received_at=1772366401.5,
        source="bighub",
        delivery_id="dlv_1",
        body=body,
    )


def decision(verdict: str, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": "evt_1",
        "event_type": "decision_event.created",
        "created_at": "2026-03-01T12:00:00.250Z",
        "decision": verdict,
        "risk_score": 0.91,
        "actor": "agent:refund-bot",
        "domain": "payments",
        "action": {"tool": "refund_payment", "amount": 1250, "currency": "EUR"},
        "rule_id": "rule_refund_limit",
        "reason": "amount above the limit",
        "request_id": "req_42",
        **extra,
    }


def approval(event_type: str, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": "evt_2",
        "event_type": event_type,
        "created_at": "2026-03-01T12:00:00.250Z",
        "approval_id": "apr_9",
        "decision_id": "dec_42",
        "actor": "agent:pricing-bot",
        "domain": "pricing",
        "reason": "price change above 20%",
        **extra,
    }


def rule(event_type: str = "rule.patch_applied", **extra: Any) -> dict[str, Any]:
    return {
        "event_id": "evt_3",
        "event_type": event_type,
        "created_at": "2026-03-01T12:00:00.250Z",
        "rule_id": "rule_refund_limit",
        "rule_name": "Refund limit",
        "actor": "user:secops@example.com",
        "patch": {"max_amount": 1000},
        **extra,
    }
