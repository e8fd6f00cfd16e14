"""The class-specific halves of the mapping: decisions, approvals, rule changes.

Each builder fills a record that ``mapper.py`` started (classification, time,
metadata, raw data) and returns the activity id and name it chose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sinks.ocsf._payload import Payload
from sinks.ocsf._schema import (
    ACTION,
    API_OTHER,
    DISPOSITION,
    ENTITY_ACTIVITY,
    OTHER,
    RISK_LEVEL,
    STATUS,
    Features,
)
from sinks.ocsf.config import OcsfMapping

__all__ = ["Draft", "build_approval", "build_decision", "build_rule", "lookups"]

# verdict -> (action_id, disposition_id, status_id, status text)
_VERDICTS: dict[str, tuple[int, int, int, str]] = {
    "allowed": (1, 1, 1, "Success"),
    "blocked": (2, 2, 2, "Failure"),
    # Held for a human: the final action is not known yet (OCSF: an unknown action may
    # still have a known disposition), and the call neither succeeded nor failed.
    "requires_approval": (0, 14, 99, "Pending approval"),
    "pending": (0, 14, 99, "Pending approval"),
    "approved": (1, 8, 1, "Success"),
    "rejected": (2, 25, 2, "Failure"),
}
_UNKNOWN_VERDICT = (0, 0, 0, "Unknown")

_RULE_ACTIVITY = {
    "created": 1,
    "create": 1,
    "added": 1,
    "patch_applied": 3,
    "patched": 3,
    "updated": 3,
    "update": 3,
    "changed": 3,
    "modified": 3,
    "edited": 3,
    "deleted": 4,
    "delete": 4,
    "removed": 4,
    "archived": 4,
    "enabled": 8,
    "activated": 8,
    "disabled": 9,
    "deactivated": 9,
}


@dataclass(slots=True)
class Draft:
    """A record being built, the payload it reads, and the profiles it needs."""

    record: dict[str, Any]
    payload: Payload
    mapping: OcsfMapping
    features: Features
    event_type: str
    vocab: tuple[dict[str, str], dict[str, str]] = field(default_factory=lambda: ({}, {}))
    profiles: set[str] = field(default_factory=set)
    severity_id: int = 1

    def set(self, key: str, value: Any) -> None:
        if value is not None and value != {} and value != []:
            self.record[key] = value


def lookups(mapping: OcsfMapping) -> tuple[dict[str, str], dict[str, str]]:
    """(decision word -> verdict, approval word -> state), lower-case, built once."""
    v = mapping.values
    verdicts = {
        "allowed": v.allowed,
        "blocked": v.blocked,
        "requires_approval": v.requires_approval,
    }
    states = {"pending": v.pending, "approved": v.approved, "rejected": v.rejected}
    return (
        {w.lower(): meaning for meaning, words in verdicts.items() for w in words},
        {w.lower(): meaning for meaning, words in states.items() for w in words},
    )


def _suffix(event_type: str) -> str:
    return event_type.split(".", 1)[1] if "." in event_type else ""


def _risk(draft: Draft) -> tuple[int, int] | None:
    """(risk_score 0-100, risk_level_id) from the payload's score, if it has one."""
    m = draft.mapping
    # Taken only where a field holds it (security_control); else it stays in unmapped.
    raw = draft.payload.number(m.paths.risk_score, take=draft.features.security_control)
    if raw is None:
        return None
    score = round(min(100.0, max(0.0, raw / m.risk_score_max * 100.0)))
    level = sum(1 for threshold in m.risk_level_thresholds if score >= threshold)
    return score, level


def _policy(draft: Draft) -> dict[str, str]:
    p = draft.mapping.paths
    policy = {
        "uid": draft.payload.text(p.rule_id, ids=True),
        "name": draft.payload.text(p.rule_name),
    }
    if policy["uid"] is None and policy["name"] is None:
        # OCSF's policy needs a uid or a name: a version alone is not taken and stays
        # in unmapped (found by the property test).
        return {}
    policy["version"] = draft.payload.text(p.rule_version, ids=True)
    return {k: v for k, v in policy.items() if v is not None}


def _agent_actor(draft: Draft, actor: dict[str, Any]) -> str | None:
    """Put the agent into ``actor``; returns a label for messages."""
    p = draft.mapping.paths
    agent_id = draft.payload.text(p.agent_id, ids=True)
    if draft.features.actor_app:
        agent_name = draft.payload.text(p.agent_name)
        if agent_id is not None:
            actor["app_uid"] = agent_id
        if agent_name is not None or agent_id is not None:
            actor["app_name"] = agent_name or agent_id
        return agent_name or agent_id
    # 1.1.0 has no app fields: the agent is who invoked the call; a separate name, if
    # any, is not taken and stays in unmapped.
    if agent_id is None:
        agent_id = draft.payload.text(p.agent_name)
    if agent_id is not None:
        actor["invoked_by"] = agent_id
    return agent_id


def _ai_operation(draft: Draft, agent: str | None, domain: str | None) -> None:
    if not draft.features.ai_operation:
        return
    p = draft.mapping.paths
    model = draft.payload.text(p.model)
    if model is not None:
        provider = draft.payload.text(p.model_provider) or "unknown"
        draft.set("ai_model", {"name": model, "ai_provider": provider})
    if agent is not None:
        context: dict[str, Any] = {"ai_role_id": 4, "ai_role": "Agent", "name": agent}
        context["service" if domain else "application"] = {"name": domain or agent}
        draft.set("message_context", context)
    if "ai_model" in draft.record or "message_context" in draft.record:
        draft.profiles.add("ai_operation")


def _governed_call(draft: Draft, verdict: str | None, actor: dict[str, Any]) -> None:
    """What decisions and approvals share: the call, the verdict, the risk, the rule."""
    p = draft.mapping.paths
    agent = _agent_actor(draft, actor)
    operation = draft.payload.text(p.operation)
    domain = draft.payload.text(p.domain)
    request_id = draft.payload.text(p.request_id, ids=True)
    api: dict[str, Any] = {"operation": operation or "unknown"}
    if domain is not None:
        api["service"] = {"name": domain}
    if request_id is not None:
        api["request"] = {"uid": request_id}
    draft.record["api"] = api

    ip = draft.payload.ip(p.source_ip)
    endpoint: dict[str, str] = {"ip": ip} if ip else {}
    endpoint["name"] = agent or "unknown"
    draft.record["src_endpoint"] = endpoint

    action_id, disposition_id, status_id, status = _VERDICTS.get(verdict or "", _UNKNOWN_VERDICT)
    policy = _policy(draft)
    authorization: dict[str, Any] = {"decision": DISPOSITION[disposition_id]}
    if policy:
        authorization["policy"] = policy
    actor["authorizations"] = [authorization]
    if not ({"app_uid", "app_name", "invoked_by", "user"} & actor.keys()):
        actor["user"] = {"name": "unknown", "type_id": 0, "type": "Unknown"}
    draft.record["actor"] = actor

    draft.set("status_id", status_id)
    draft.set("status", status)
    draft.set("status_detail", draft.payload.text(p.reason))

    risk = _risk(draft)
    if risk is not None:
        draft.severity_id = risk[1] + 1  # Info..Critical -> Informational..Critical
    if draft.features.security_control:
        draft.profiles.add("security_control")
        draft.set("action_id", action_id)
        draft.set("action", ACTION[action_id])
        draft.set("disposition_id", disposition_id)
        draft.set("disposition", DISPOSITION[disposition_id])
        draft.set("policy", policy or None)
        elevated = disposition_id in (2, 25)
        if risk is not None:
            draft.set("risk_score", risk[0])
            draft.set("risk_level_id", risk[1])
            draft.set("risk_level", RISK_LEVEL[risk[1]])
            elevated = elevated or risk[1] >= 3
        draft.record["is_alert"] = elevated
    _ai_operation(draft, agent, domain)

    what = operation or "an action"
    by = f" by {agent}" if agent else ""
    outcome = DISPOSITION[disposition_id].lower()
    draft.set("message", f"BIGHUB: {what}{by}: {outcome}")


def build_decision(draft: Draft) -> tuple[int, str]:
    """``decision_event.*`` -> API Activity; the verdict as the security control outcome."""
    verdict = draft.payload.word(draft.mapping.paths.verdict, draft.vocab[0])
    _governed_call(draft, verdict, {})
    return API_OTHER, "Decision"


def build_approval(draft: Draft) -> tuple[int, str]:
    """``approval.*`` -> API Activity; the approver is ``actor.user`` (human oversight)."""
    m = draft.mapping
    state = draft.payload.word(m.paths.approval_status, draft.vocab[1])
    if state is None:  # approval.approved, approval.rejected, approval.created ...
        state = draft.vocab[1].get(_suffix(draft.event_type).lower())
    actor: dict[str, Any] = {}
    approver = draft.payload.text(m.paths.approver)
    if approver is not None:
        actor["user"] = {"name": approver, "type_id": 1, "type": "User"}
    _governed_call(draft, state, actor)
    return API_OTHER, "Approval"


def build_rule(draft: Draft) -> tuple[int, str]:
    """``rule.*`` -> Entity Management of a Policy entity; the patch in ``entity.data``."""
    p = draft.mapping.paths
    suffix = _suffix(draft.event_type)
    activity_id = _RULE_ACTIVITY.get(suffix.lower())
    entity: dict[str, Any] = {"type": "Policy"}
    if draft.features.entity_extras:
        entity["type_id"] = 5
    policy = _policy(draft)
    entity.update(policy)
    if "uid" not in entity and "name" not in entity:
        entity["name"] = "unknown"
    patch = draft.payload.json(p.patch)
    if patch is not None:
        entity["data"] = patch
    draft.record["entity"] = entity
    if draft.features.entity_extras:
        who = draft.payload.text(p.changed_by)
        if who is not None:
            draft.record["actor"] = {"user": {"name": who}}
    draft.set("status_id", 1 if activity_id is not None else 0)
    draft.set("status", STATUS[1 if activity_id is not None else 0])
    draft.set("comment", draft.payload.text(p.reason) if draft.features.entity_extras else None)
    label = entity.get("name") or entity.get("uid")
    if activity_id is None:
        name = suffix or OTHER
        draft.set("message", f"BIGHUB rule {label}: {name}")
        return API_OTHER, name
    caption = ENTITY_ACTIVITY[activity_id]
    draft.set("message", f"BIGHUB rule {label}: {caption.lower()}")
    if activity_id > 4 and not draft.features.entity_extras:
        return API_OTHER, caption  # 1.1.0 has no Enable / Disable
    return activity_id, caption
