"""Settings of the OCSF encoding: which version, and where each OCSF field comes from.

BIGHUB does not publish its webhook payload schema, so every source is a list of
dotted paths into the payload, tried in order; the first one holding a usable value
wins. The defaults follow the payloads seen so far and common spellings. Values the
mapping does not use are kept under ``unmapped``; nothing is dropped.

``OcsfOptions`` is the mixin every sink with an ``encoding`` option inherits::

    [[sinks]]
    type = "kafka"
    encoding = "ocsf"
    ocsf_version = "1.1.0"
    [sinks.ocsf.paths]
    agent_id = ["agent.id", "actor"]
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "DEFAULT_VERSION",
    "VERSIONS",
    "Encoding",
    "FieldPaths",
    "OcsfFields",
    "OcsfMapping",
    "OcsfOptions",
    "OcsfVersion",
    "Vocabulary",
]

OcsfVersion = Literal["1.1.0", "1.7.0", "1.8.0"]
VERSIONS: tuple[OcsfVersion, ...] = ("1.1.0", "1.7.0", "1.8.0")
DEFAULT_VERSION: OcsfVersion = "1.8.0"
Encoding = Literal["export", "ocsf"]

_PATH = re.compile(r"[^.\s]+(\.[^.\s]+)*")


def _paths(*paths: str) -> list[str]:
    return list(paths)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldPaths(_Model):
    """Payload paths per OCSF source field (dotted, tried in order)."""

    verdict: list[str] = Field(
        default_factory=lambda: _paths("decision", "verdict", "outcome", "result"),
        description="The decision: allowed / blocked / requires approval (see [values]).",
    )
    risk_score: list[str] = Field(
        default_factory=lambda: _paths("risk_score", "risk.score", "risk"),
        description="BIGHUB's risk score, a number from 0 to risk_score_max.",
    )
    reason: list[str] = Field(
        default_factory=lambda: _paths("reason", "explanation", "decision_reason"),
        description="Why: becomes status_detail.",
    )
    agent_id: list[str] = Field(
        default_factory=lambda: _paths("agent_id", "agent.id", "actor"),
        description="The AI agent that proposed the action (decisions and approvals).",
    )
    agent_name: list[str] = Field(
        default_factory=lambda: _paths("agent_name", "agent.name"),
        description="The agent's display name.",
    )
    approver: list[str] = Field(
        default_factory=lambda: _paths(
            "approver", "approved_by", "resolved_by", "reviewer", "reviewed_by"
        ),
        description="The human who resolved an approval (actor.user).",
    )
    approval_status: list[str] = Field(
        default_factory=lambda: _paths("status", "resolution", "state", "decision"),
        description="An approval's state: pending / approved / rejected (see [values]).",
    )
    changed_by: list[str] = Field(
        default_factory=lambda: _paths("changed_by", "user", "author", "actor"),
        description="Who changed a rule (actor.user of rule events).",
    )
    operation: list[str] = Field(
        default_factory=lambda: _paths("action.tool", "tool", "action.name", "action", "operation"),
        description="The tool or action the agent wanted to run: api.operation.",
    )
    domain: list[str] = Field(
        default_factory=lambda: _paths("domain", "system", "service"),
        description="The domain / system the action targets: api.service.name.",
    )
    request_id: list[str] = Field(
        default_factory=lambda: _paths("request_id", "decision_id", "approval_id"),
        description="The id of the governed request: api.request.uid.",
    )
    correlation_id: list[str] = Field(
        default_factory=lambda: _paths("correlation_id", "decision_id", "request_id"),
        description="The id linking approvals to their decision: metadata.correlation_uid.",
    )
    rule_id: list[str] = Field(
        default_factory=lambda: _paths("rule_id", "rule.id", "policy_id"),
        description="The rule behind a decision, or the rule a rule event changes.",
    )
    rule_name: list[str] = Field(
        default_factory=lambda: _paths("rule_name", "rule.name", "policy_name"),
        description="The rule's name.",
    )
    rule_version: list[str] = Field(
        default_factory=lambda: _paths("rule_version", "rule.version"),
        description="The rule's version.",
    )
    patch: list[str] = Field(
        default_factory=lambda: _paths("patch", "changes", "diff", "rule"),
        description="What a rule event changed: entity.data (any JSON).",
    )
    tenant_id: list[str] = Field(
        default_factory=lambda: _paths("tenant_id", "org_id", "organization_id", "workspace_id"),
        description="metadata.tenant_uid.",
    )
    source_ip: list[str] = Field(
        default_factory=lambda: _paths("source_ip", "client_ip", "ip"),
        description="The agent's IP address, if BIGHUB reports one: src_endpoint.ip.",
    )
    model: list[str] = Field(
        default_factory=lambda: _paths("model", "selected_model", "model_used"),
        description="The AI model (OCSF 1.8 ai_operation profile: ai_model.name).",
    )
    model_provider: list[str] = Field(
        default_factory=lambda: _paths("model_provider", "ai_provider", "provider"),
        description="The model's provider (ai_model.ai_provider).",
    )

    @field_validator("*")
    @classmethod
    def _dotted(cls, value: list[str]) -> list[str]:
        for path in value:
            if not _PATH.fullmatch(path):
                raise ValueError(f"{path!r} is not a dotted path such as action.tool")
        return value


class Vocabulary(_Model):
    """Payload values (compared case-insensitively) and what they mean."""

    allowed: list[str] = Field(
        default_factory=lambda: _paths(
            "allow", "allowed", "autonomous", "permit", "permitted", "pass", "passed"
        ),
        description="Decision values meaning the action may run.",
    )
    blocked: list[str] = Field(
        default_factory=lambda: _paths(
            "block", "blocked", "deny", "denied", "reject", "rejected", "should_not_run"
        ),
        description="Decision values meaning the action was stopped.",
    )
    requires_approval: list[str] = Field(
        default_factory=lambda: _paths(
            "requires_approval",
            "require_approval",
            "approval_required",
            "needs_approval",
            "needs_review",
            "review",
            "escalate",
            "escalated",
        ),
        description="Decision values meaning a human must approve first.",
    )
    pending: list[str] = Field(
        default_factory=lambda: _paths("pending", "created", "requested", "open", "waiting"),
        description="Approval states (or event type suffixes) meaning not yet resolved.",
    )
    approved: list[str] = Field(
        default_factory=lambda: _paths("approved", "approve", "granted", "accepted", "modified"),
        description="Approval states (or event type suffixes) meaning approved.",
    )
    rejected: list[str] = Field(
        default_factory=lambda: _paths("rejected", "reject", "denied", "deny", "declined"),
        description="Approval states (or event type suffixes) meaning rejected.",
    )


class OcsfMapping(_Model):
    """How BIGHUB payloads become OCSF records."""

    paths: FieldPaths = Field(default_factory=FieldPaths, description="Payload paths.")
    values: Vocabulary = Field(default_factory=Vocabulary, description="Payload vocabularies.")
    risk_score_max: float = Field(
        default=1.0,
        gt=0,
        description="BIGHUB's risk score runs from 0 to this; OCSF risk_score is 0-100.",
    )
    risk_level_thresholds: list[int] = Field(
        default_factory=lambda: [20, 40, 70, 90],
        min_length=4,
        max_length=4,
        description="Lowest risk_score (0-100) of Low, Medium, High and Critical; below the "
        "first is Info.",
    )
    product_name: str = Field(
        default="BIGHUB", min_length=1, max_length=128, description="metadata.product.name."
    )
    vendor_name: str = Field(
        default="BIGHUB", min_length=1, max_length=128, description="metadata.product.vendor_name."
    )

    @field_validator("risk_level_thresholds")
    @classmethod
    def _ascending(cls, value: list[int]) -> list[int]:
        if value != sorted(value) or len(set(value)) != len(value) or not value[0] > 0:
            raise ValueError("four strictly ascending scores between 1 and 100")
        if value[-1] > 100:
            raise ValueError("four strictly ascending scores between 1 and 100")
        return value

    @model_validator(mode="after")
    def _disjoint(self) -> OcsfMapping:
        v = self.values
        for group in (
            (v.allowed, v.blocked, v.requires_approval),
            (v.pending, v.approved, v.rejected),
        ):
            seen: set[str] = set()
            for words in group:
                lowered = {w.lower() for w in words}
                if seen & lowered:
                    raise ValueError(f"values: {sorted(seen & lowered)} listed under two meanings")
                seen |= lowered
        return self


class OcsfFields(BaseModel):
    """Mixin: ``ocsf_version`` and the ``ocsf`` mapping (sinks that always write OCSF)."""

    ocsf_version: OcsfVersion = Field(
        default=DEFAULT_VERSION,
        description='OCSF schema version of "ocsf" records: 1.1.0 (what Amazon Security Lake '
        "custom sources accept), 1.7.0, or 1.8.0.",
    )
    ocsf: OcsfMapping = Field(
        default_factory=OcsfMapping, description="Where OCSF fields come from in the payload."
    )


class OcsfOptions(OcsfFields):
    """Mixin for sink configs: ``encoding`` plus ``ocsf_version`` and the ``ocsf`` mapping."""

    encoding: Encoding = Field(
        default="export",
        description='"export": the export record (schema_version 1); "ocsf": one OCSF record '
        "per event.",
    )
