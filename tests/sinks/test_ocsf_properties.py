"""Property tests: any JSON-object payload maps without raising to a valid record."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sinks.ocsf import Mapper, OcsfMapping
from tests.sinks.ocsf_support import VERSIONS, event_from
from tests.sinks.ocsf_validator import assert_valid, problems

# Keys the default mapping reads, so generated payloads hit the mapping, not only unmapped.
_KNOWN = sorted(
    {p.split(".")[0] for paths in OcsfMapping().paths.model_dump().values() for p in paths}
    | {"event_id", "id", "event_type", "type", "created_at", "timestamp", "occurred_at"}
)
_WORDS = ["allowed", "blocked", "requires_approval", "approved", "rejected", "pending", "BLOCK"]

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(_WORDS)
    | st.text(max_size=20)
    | st.sampled_from(["10.0.0.1", "::1", "2026-03-01T12:00:00Z", "\ud800"])
)


def _nested(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keys = st.sampled_from(_KNOWN) | st.text(max_size=8)
    return st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4)


_json = st.recursive(
    _scalars,
    _nested,
    max_leaves=25,
)
_payloads = st.dictionaries(st.sampled_from(_KNOWN) | st.text(max_size=12), _json, max_size=12)
_types = st.sampled_from(
    [
        "decision_event.created",
        "approval.created",
        "approval.approved",
        "approval.rejected",
        "rule.patch_applied",
        "rule.enabled",
        "rule",
        "other.thing",
    ]
) | st.from_regex(r"[A-Za-z0-9_.:-]{1,40}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(
    payload=_payloads,
    event_type=_types,
    version=st.sampled_from(VERSIONS),
    seq=st.integers(min_value=0, max_value=2**40),
    occurred=st.sampled_from([None, "2026-03-01T12:00:00.250+00:00"]),
)
def test_any_payload_maps_to_a_valid_record(
    payload: dict[str, Any], event_type: str, version: str, seq: int, occurred: str | None
) -> None:
    """Never raises, always validates, and keys the mapping does not know stay in unmapped."""
    event = event_from(payload, event_type=event_type, seq=seq, occurred_at=occurred)
    result = Mapper(OcsfMapping(), version).map(event)
    assert_valid(result.record, version)
    json.loads(result.json())  # serialisable, lone surrogates included
    unmapped = result.record.get("unmapped", {})
    for key, value in payload.items():
        if key not in _KNOWN:
            assert unmapped[key] == value


# -- the validator itself must catch what it claims to catch ----------------------------


def _good(version: str) -> dict[str, Any]:
    payload = {"event_type": "decision_event.created", "decision": "blocked", "risk_score": 0.5}
    return Mapper(OcsfMapping(), version).map(event_from(payload)).record


@pytest.mark.parametrize(
    ("version", "breakage", "expected"),
    [
        ("1.8.0", lambda r: r.update(surprise=1), "surprise"),
        ("1.8.0", lambda r: r["metadata"].update(colour="red"), "colour"),
        ("1.8.0", lambda r: r.pop("actor"), "actor"),
        ("1.8.0", lambda r: r.update(disposition_id=13_000), "disposition_id"),
        ("1.8.0", lambda r: r.update(severity="Low"), "severity"),
        ("1.8.0", lambda r: r.update(risk_score="91"), "risk_score"),
        ("1.8.0", lambda r: r.update(time=2**70), "time"),
        ("1.8.0", lambda r: r.update(status_id=None), "status_id"),
        ("1.8.0", lambda r: r["metadata"].update(profiles=[]), "profile"),
        ("1.8.0", lambda r: r.update(type_uid=600301), "type_uid"),
        ("1.8.0", lambda r: r.update(actor={"authorizations": []}), "at least one"),
        ("1.8.0", lambda r: r["src_endpoint"].update(ip="not-an-ip"), "ip"),
        ("1.1.0", lambda r: r.update(disposition_id=2), "disposition_id"),
        ("1.1.0", lambda r: r.update(raw_data_hash={"algorithm_id": 3, "value": "ab"}), "raw"),
        ("1.1.0", lambda r: r.update(raw_data="x" * 70_000), "65535"),
        ("1.1.0", lambda r: r["actor"].update(app_name="bot"), "app_name"),
    ],
)
def test_validator_catches_broken_records(version: str, breakage: Any, expected: str) -> None:
    """Each kind of violation the validator claims to check is reported."""
    record = _good(version)
    assert problems(record, version) == []
    breakage(record)
    found = problems(record, version)
    assert any(expected in p for p in found), found
