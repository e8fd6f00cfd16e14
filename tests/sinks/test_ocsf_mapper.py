"""The OCSF mapper: every case validates against 1.1.0, 1.7.0 and 1.8.0 and maps right."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from pydantic import ValidationError

from sinks.ocsf import CloudContext, Mapper, OcsfMapping
from tests.sinks.ocsf_support import (
    OCCURRED_MS,
    VERSIONS,
    approval,
    decision,
    event_from,
    rule,
)
from tests.sinks.ocsf_validator import assert_valid


def mapped(payload: dict[str, Any] | bytes, version: str, **kw: Any) -> dict[str, Any]:
    mapping = kw.pop("mapping", OcsfMapping())
    cloud = kw.pop("cloud", None)
    record = Mapper(mapping, version, cloud=cloud).map(event_from(payload, **kw)).record
    assert_valid(record, version)
    return record


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("verdict", "action_id", "disposition_id", "status_id", "decision_text"),
    [
        ("allowed", 1, 1, 1, "Allowed"),
        ("blocked", 2, 2, 2, "Blocked"),
        ("requires_approval", 0, 14, 99, "Delayed"),
    ],
)
def test_decision_maps_the_verdict(
    version: str,
    verdict: str,
    action_id: int,
    disposition_id: int,
    status_id: int,
    decision_text: str,
) -> None:
    """A decision is API Activity 6003 with the verdict as action / disposition / status."""
    r = mapped(decision(verdict), version)
    assert (r["class_uid"], r["category_uid"], r["type_uid"]) == (6003, 6, 600399)
    assert r["activity_name"] == "Decision"
    assert r["time"] == OCCURRED_MS
    assert r["status_id"] == status_id
    assert r["status_detail"] == "amount above the limit"
    assert r["api"] == {
        "operation": "refund_payment",
        "service": {"name": "payments"},
        "request": {"uid": "req_42"},
    }
    assert r["metadata"]["uid"] == "evt_1"
    assert r["metadata"]["product"] == {"name": "BIGHUB", "vendor_name": "BIGHUB"}
    authorization = r["actor"]["authorizations"][0]
    assert authorization == {"decision": decision_text, "policy": {"uid": "rule_refund_limit"}}
    assert r["unmapped"]["action"] == {"amount": 1250, "currency": "EUR"}
    if version == "1.1.0":
        assert r["actor"]["invoked_by"] == "agent:refund-bot"
        assert "disposition_id" not in r
        assert "risk_score" not in r
        assert r["unmapped"]["risk_score"] == 0.91  # no place for it in 1.1.0: kept
    else:
        assert (r["action_id"], r["disposition_id"]) == (action_id, disposition_id)
        assert r["actor"]["app_uid"] == "agent:refund-bot"
        assert (r["risk_score"], r["risk_level_id"], r["risk_level"]) == (91, 4, "Critical")
        assert r["policy"] == {"uid": "rule_refund_limit"}
        assert r["is_alert"] is True
        assert "security_control" in r["metadata"]["profiles"]
    assert r["severity_id"] == 5  # from the risk: Critical


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("event_type", "extra", "disposition_id", "status_id"),
    [
        ("approval.created", {}, 14, 99),
        ("approval.resolved", {"status": "approved", "approver": "user:ana"}, 8, 1),
        ("approval.rejected", {"approver": "user:ana"}, 25, 2),
    ],
)
def test_approval_maps_the_state_and_the_approver(
    version: str, event_type: str, extra: dict[str, Any], disposition_id: int, status_id: int
) -> None:
    """Approvals: pending 14 Delayed / approved 8 / rejected 25; the approver is actor.user."""
    r = mapped(approval(event_type, **extra), version)
    assert r["class_uid"] == 6003
    assert r["activity_name"] == "Approval"
    assert r["status_id"] == status_id
    assert r["metadata"]["correlation_uid"] == "dec_42"
    if "approver" in extra:
        assert r["actor"]["user"] == {"name": "user:ana", "type_id": 1, "type": "User"}
    if version != "1.1.0":
        assert r["disposition_id"] == disposition_id
        assert r["actor"]["app_uid"] == "agent:pricing-bot"
    assert "status" not in r.get("unmapped", {})


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("event_type", "activity_id_11", "activity_id"),
    [
        ("rule.created", 1, 1),
        ("rule.patch_applied", 3, 3),
        ("rule.deleted", 4, 4),
        ("rule.enabled", 99, 8),
        ("rule.disabled", 99, 9),
        ("rule.renamed", 99, 99),
    ],
)
def test_rule_change_is_entity_management_of_a_policy(
    version: str, event_type: str, activity_id_11: int, activity_id: int
) -> None:
    """Rule events are Entity Management 3004 on a Policy entity; the patch in entity.data."""
    r = mapped(rule(event_type), version)
    assert (r["class_uid"], r["category_uid"]) == (3004, 3)
    assert r["activity_id"] == (activity_id_11 if version == "1.1.0" else activity_id)
    entity = r["entity"]
    assert entity["type"] == "Policy"
    assert entity["uid"] == "rule_refund_limit"
    assert entity["data"] == {"max_amount": 1000}
    if version == "1.1.0":
        assert r["unmapped"]["actor"] == "user:secops@example.com"  # no actor in 1.1.0
    else:
        assert entity["type_id"] == 5
        assert r["actor"] == {"user": {"name": "user:secops@example.com"}}


@pytest.mark.parametrize("version", VERSIONS)
def test_unknown_event_type_is_a_valid_base_event(version: str) -> None:
    """An event type nobody knows becomes a Base Event with everything under unmapped."""
    payload = {"event_id": "evt_x", "event_type": "budget.exceeded", "limit": {"usd": 5}}
    r = mapped(payload, version)
    assert (r["class_uid"], r["category_uid"], r["activity_id"]) == (0, 0, 99)
    assert r["activity_name"] == "budget.exceeded"
    assert r["unmapped"] == {"limit": {"usd": 5}}


@pytest.mark.parametrize("version", VERSIONS)
def test_raw_data_is_the_verbatim_body_and_its_hash(version: str) -> None:
    """raw_data holds the signed bytes as received; raw_data_hash their SHA-256 (1.7+)."""
    body = b'{"event_type":"decision_event.created",  "decision":"allowed","n":1.50}'
    r = mapped(body, version)
    assert r["raw_data"] == body.decode()
    if version == "1.1.0":
        assert "raw_data_hash" not in r
    else:
        assert r["raw_data_hash"] == {
            "algorithm_id": 3,
            "algorithm": "SHA-256",
            "value": hashlib.sha256(body).hexdigest(),
        }
        assert r["raw_data_size"] == len(body)
    assert r["unmapped"] == {"n": 1.5}


def test_body_over_the_1_1_string_limit_is_left_out_of_raw_data() -> None:
    """1.1.0 caps strings at 65,535 characters: a larger body is not copied, every field is."""
    big = decision("allowed", note="x" * 70_000)
    r = mapped(big, "1.1.0")
    assert "raw_data" not in r
    assert r["unmapped"]["note"] == "x" * 70_000
    assert mapped(big, "1.8.0")["raw_data"] == json.dumps(big)


@pytest.mark.parametrize("version", VERSIONS)
def test_wrongly_typed_values_stay_in_unmapped(version: str) -> None:
    """A value the mapping cannot use (wrong type, not valid text) is kept, not dropped."""
    payload = decision(
        "maybe", risk_score="high", domain=["a"], reason="bad \ud800 text", source_ip="999.1.1.1"
    )
    r = mapped(payload, version)
    kept = r["unmapped"]
    assert kept["decision"] == "maybe"
    assert kept["risk_score"] == "high"
    assert kept["domain"] == ["a"]
    assert kept["reason"] == "bad \ud800 text"
    assert kept["source_ip"] == "999.1.1.1"
    assert r["status_id"] == 0
    json.loads(Mapper(OcsfMapping(), version).map(event_from(payload)).json())


def test_paths_and_vocabulary_are_configurable() -> None:
    """Operators point the mapping at their payload's paths and words."""
    mapping = OcsfMapping.model_validate(
        {
            "paths": {"verdict": ["result.outcome"], "agent_id": ["agent.ref"]},
            "values": {"blocked": ["STOPPED"]},
            "risk_score_max": 100,
            "risk_level_thresholds": [10, 20, 30, 40],
        }
    )
    payload = {
        "event_type": "decision_event.created",
        "result": {"outcome": "stopped"},
        "agent": {"ref": "bot-7"},
        "risk_score": 25,
    }
    r = mapped(payload, "1.8.0", mapping=mapping)
    assert r["disposition_id"] == 2
    assert r["actor"]["app_uid"] == "bot-7"
    assert (r["risk_score"], r["risk_level_id"]) == (25, 2)
    assert "unmapped" not in r  # everything found its place


def test_cloud_context_adds_the_cloud_profile() -> None:
    """Security Lake adds where the records live: the cloud profile and cloud.account."""
    cloud = CloudContext(region="eu-west-1", account_uid="123456789012")
    r = mapped(decision("allowed"), "1.1.0", cloud=cloud)
    assert r["cloud"]["region"] == "eu-west-1"
    assert r["metadata"]["profiles"] == ["cloud"]


def test_time_falls_back_to_received_at() -> None:
    """Without a usable payload time the record time is when the receiver stored it."""
    r = mapped(
        {"event_type": "decision_event.created", "created_at": "soon"}, "1.8.0", occurred_at=None
    )
    assert r["time"] == 1772366401500
    assert r["unmapped"] == {"created_at": "soon"}


def test_unknown_version_is_refused() -> None:
    """The mapper only speaks the versions it was validated against."""
    with pytest.raises(ValueError, match="not supported"):
        Mapper(OcsfMapping(), "1.9.0")


@pytest.mark.parametrize(
    "bad",
    [
        {"risk_level_thresholds": [40, 20, 70, 90]},
        {"risk_level_thresholds": [0, 20, 70, 90]},
        {"risk_level_thresholds": [20, 40, 70, 101]},
        {"paths": {"verdict": ["a..b"]}},
        {"values": {"allowed": ["ok"], "blocked": ["OK"]}},
        {"unknown": 1},
    ],
)
def test_mapping_config_is_checked(bad: dict[str, Any]) -> None:
    """Thresholds ascend, paths are dotted, one word has one meaning, no unknown keys."""
    with pytest.raises(ValidationError):
        OcsfMapping.model_validate(bad)
