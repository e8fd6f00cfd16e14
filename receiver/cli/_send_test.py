"""``send-test``: sign and send sample BIGHUB events to a receiver."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import SecretStr

from receiver import signatures
from receiver.cli._common import load, with_config
from receiver.settings import resolve_secret

__all__ = ["register", "sample_events"]


def sample_events(kind: str, count: int) -> list[dict[str, Any]]:
    """Sample BIGHUB-like events for ``send-test`` (fresh ids each call)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    makers: dict[str, Callable[[], dict[str, Any]]] = {
        "decision": lambda: {
            "event_type": "decision_event.created",
            "decision": "blocked",
            "risk_score": 0.91,
            "actor": "agent:refund-bot",
            "domain": "payments",
            "action": {"tool": "refund_payment", "amount": 1250, "currency": "EUR"},
            "rule_id": "rule_refund_limit",
        },
        "rule": lambda: {
            "event_type": "rule.patch_applied",
            "rule_id": "rule_refund_limit",
            "actor": "user:secops@example.com",
            "patch": {"max_amount": 1000},
        },
        "approval": lambda: {
            "event_type": "approval.created",
            "approval_id": f"apr_{uuid.uuid4().hex[:10]}",
            "actor": "agent:pricing-bot",
            "domain": "pricing",
            "reason": "price change above 20%",
        },
    }
    kinds = list(makers) if kind == "all" else [kind]
    out = []
    for i in range(count):
        event = makers[kinds[i % len(kinds)]]()
        out.append({"event_id": f"evt_{uuid.uuid4().hex}", "created_at": now, **event})
    return out


def cmd_send_test(args: argparse.Namespace) -> int:
    if args.secret:
        try:
            secret = resolve_secret(args.secret)
        except ValueError as exc:
            print(f"bighub-siem: --secret: {exc}", file=sys.stderr)
            return 2
        key = secret.get_secret_value() if isinstance(secret, SecretStr) else str(secret)
    else:
        settings = load(args.config, alternative=", or give --secret env:NAME")
        key = settings.ingress.secrets[0].get_secret_value()
    failures = 0
    with httpx.Client(timeout=args.timeout) as client:
        for event in sample_events(args.type, args.count):
            body = json.dumps(event, separators=(",", ":")).encode()
            ts = int(time.time())
            headers = {
                "Content-Type": "application/json",
                "X-BIGHUB-Timestamp": str(ts),
                "X-BIGHUB-Signature": signatures.signature_header(key, ts, body),
                "X-BIGHUB-Delivery-Id": f"dlv_{uuid.uuid4().hex[:12]}",
            }
            try:
                resp = client.post(args.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                print(f"{event['event_type']:<24} {event['event_id']}  error: {exc}")
                failures += 1
                continue
            ok = 200 <= resp.status_code < 300
            failures += not ok
            print(f"{event['event_type']:<24} {event['event_id']}  {resp.status_code} {resp.text}")
    return 1 if failures else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    st = with_config(sub.add_parser("send-test", help="sign and send sample events"))
    st.add_argument("--url", default="http://127.0.0.1:8080/webhooks/bighub")
    st.add_argument("--secret", help="env:NAME or file:PATH (default: first secret in --config)")
    st.add_argument("--type", choices=["decision", "rule", "approval", "all"], default="all")
    st.add_argument("--count", type=int, default=3)
    st.add_argument("--timeout", type=float, default=10.0)
    st.set_defaults(func=cmd_send_test)
