"""Events -> Logs Ingestion rows and call bodies: pure, no network."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sinks.base import Event
from sinks.sentinel.encoder import (
    DECISION_COLUMNS,
    PAYLOAD_MAX_BYTES,
    RULE_COLUMNS,
    TEXT_MAX_CHARS,
    array_bytes,
    body_for,
    decision_row,
    iso_time,
    plan_calls,
    row_for,
    rule_row,
)
from tests.fakes.hec import make_event
from tests.fakes.logs_ingestion import _fits

STREAMS = {
    "decision": "Custom-BighubDecisions",
    "approval": "Custom-BighubDecisions",
    "rule": "Custom-BighubRuleChanges",
    "other": "Custom-BighubDecisions",
}


def raw_event(body: bytes, event_type: str = "decision_event.created", **kw: Any) -> Event:
    values: dict[str, Any] = {
        "seq": 1,
        "event_id": "evt-1",
        "id_origin": "body.event_id",
        "event_type": event_type,
        "category": {"decision_event": "decision", "rule": "rule", "approval": "approval"}.get(
            event_type.split(".")[0], "other"
        ),
        "occurred_at": "2026-11-24T08:00:00.123+00:00",
        "received_at": 1_795_500_000.5,
        "source": "bighub",
        "delivery_id": "dlv-1",
        "body": body,
    }
    values.update(kw)
    return Event(**values)


def typed(row: dict[str, Any], columns: dict[str, str] | Any) -> None:
    assert set(row) == set(columns), "a row has exactly the declared columns"
    wrong = {c: row[c] for c, kind in columns.items() if not _fits(row[c], kind)}
    assert not wrong, f"values that do not fit their column type: {wrong}"


def test_decision_row_has_typed_columns_and_the_body_as_payload() -> None:
    """A decision maps to the declared columns; Payload is the body; EventId always set."""
    event = make_event(
        7,
        actor="agent:refund-bot",
        decision="blocked",
        risk_score=0.91,
        domain="payments",
        action={"tool": "refund_payment", "amount": 1250},
        rule_id="rule_refund_limit",
    )
    row = json.loads(decision_row(event))
    typed(row, DECISION_COLUMNS)
    assert row["EventId"] == "evt-7"
    assert row["TimeGenerated"] == "2026-11-24T08:00:00.123Z"
    assert row["ReceivedAt"] == iso_time(event.received_at)
    assert (row["Actor"], row["Action"], row["Domain"]) == (
        "agent:refund-bot",
        "refund_payment",
        "payments",
    )
    assert (row["Allowed"], row["Result"], row["RiskScore"], row["RuleId"]) == (
        False,
        "blocked",
        0.91,
        "rule_refund_limit",
    )
    assert row["Payload"] == json.loads(event.body)
    assert row["PayloadTruncated"] is False
    assert row["DeliveryId"] == "dlv-7"


def test_allowed_comes_from_a_flag_or_the_result_word() -> None:
    """An explicit allowed flag wins; else allow/approve words are true, block/deny false."""
    flag = json.loads(decision_row(make_event(1, allowed=True, decision="blocked")))
    assert flag["Allowed"] is True
    assert json.loads(decision_row(make_event(2, decision="allowed")))["Allowed"] is True
    assert json.loads(decision_row(make_event(3, outcome="denied")))["Allowed"] is False
    unknown = json.loads(decision_row(make_event(4, decision="approval_required")))
    assert unknown["Allowed"] is None
    assert unknown["Result"] == "approval_required"


def test_rule_change_row_uses_the_audit_vocabulary() -> None:
    """rule.patch_applied -> AuditEventType Set, Object the rule, NewValue the patch as JSON."""
    event = make_event(
        3,
        "rule.patch_applied",
        rule_id="rule_refund_limit",
        actor="user:secops@example.com",
        patch={"max_amount": 1000},
        previous={"max_amount": 5000},
    )
    row = json.loads(rule_row(event))
    typed(row, RULE_COLUMNS)
    assert row["AuditEventType"] == "Set"
    assert row["Operation"] == "rule.patch_applied"
    assert (row["Object"], row["ObjectId"], row["ObjectType"]) == (
        "rule_refund_limit",
        "rule_refund_limit",
        "Policy Rule",
    )
    assert json.loads(row["NewValue"]) == {"max_amount": 1000}
    assert json.loads(row["OldValue"]) == {"max_amount": 5000}
    assert row["Actor"] == "user:secops@example.com"
    created = json.loads(rule_row(make_event(4, "rule.created", rule={"id": "r9", "name": "n"})))
    assert (created["AuditEventType"], created["Object"], created["ObjectId"]) == (
        "Create",
        "n",
        "r9",
    )
    other = json.loads(rule_row(make_event(5, "rule.renamed")))
    assert other["AuditEventType"] == "Other"


def test_row_for_routes_by_category_to_the_configured_stream() -> None:
    """Decisions, approvals and others take the decisions shape; rules the audit shape."""
    for event_type, stream, columns in [
        ("decision_event.created", "Custom-BighubDecisions", DECISION_COLUMNS),
        ("approval.created", "Custom-BighubDecisions", DECISION_COLUMNS),
        ("rule.patch_applied", "Custom-BighubRuleChanges", RULE_COLUMNS),
        ("webhook.ping", "Custom-BighubDecisions", DECISION_COLUMNS),
    ]:
        row = row_for(make_event(1, event_type), STREAMS)
        assert row.stream == stream
        assert set(json.loads(row.data)) == set(columns)


def test_time_generated_falls_back_to_received_at() -> None:
    """No (or an unreadable) event time: TimeGenerated is when the receiver stored it."""
    for occurred in (None, "yesterday"):
        row = json.loads(decision_row(make_event(1, occurred_at=occurred)))
        assert row["TimeGenerated"] == row["ReceivedAt"]
    naive = json.loads(decision_row(make_event(1, occurred_at="2026-11-24T08:00:00")))
    assert naive["TimeGenerated"] == "2026-11-24T08:00:00.000Z"


@settings(max_examples=2000, deadline=None)
@given(st.floats(min_value=0, max_value=2.5e11))
def test_iso_time_is_what_datetime_writes(epoch: float) -> None:
    """The cached-seconds formatting gives datetime's text to the millisecond."""
    moment = datetime.fromtimestamp(epoch, tz=timezone.utc)
    expected = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert iso_time(epoch) == expected


@settings(max_examples=500, deadline=None)
@given(
    occurred=st.datetimes().map(datetime.isoformat)
    | st.datetimes(timezones=st.just(timezone.utc)).map(datetime.isoformat)
    | st.datetimes().map(lambda d: d.isoformat(timespec="milliseconds") + "Z")
    | st.sampled_from(
        [
            "2026-11-24T08:00:00.1234567+00:00",
            "2026-11-24T08:00:00.12Z",
            "2026-11-24 08:00:00Z",
            "2026-11-24T08:00:00.123-00:00",
            "2026-11-24T08:00:00.123+01:30",
            "2026-11-24",
            "2026-02-30T08:00:00Z",
            "2026-11-24T08:00:00.\u0661\u0662\u0663Z",  # digits, not ASCII,
        ]
    )
)
def test_time_generated_is_the_event_time_in_utc(occurred: str) -> None:
    """Whatever form the event time takes, TimeGenerated is that moment in UTC, to the
    millisecond (cut, as datetime writes it), or ReceivedAt when Python cannot read it."""
    row = json.loads(decision_row(raw_event(b"{}", occurred_at=occurred)))
    try:
        moment = datetime.fromisoformat(occurred.replace("Z", "+00:00"))
    except ValueError:
        assert row["TimeGenerated"] == row["ReceivedAt"]
        return
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    text = moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")
    assert row["TimeGenerated"] == text.replace("+00:00", "Z")


def test_big_integers_and_non_json_numbers_stay_exact_in_text_columns() -> None:
    """Integers over 64 bits are written in full (not rounded through a float), and bodies
    only Python's parser reads (1e400) still give their row."""
    big = 123456789012345678901234567890
    body = f'{{"actor":{big},"action":{{"x":{big}}},"domain":[1.5,2]}}'.encode()
    row = json.loads(decision_row(raw_event(body)))
    assert row["Actor"] == str(big)
    assert row["Action"] == f'{{"x":{big}}}'
    assert row["Domain"] == "[1.5,2]"
    assert row["Payload"]["actor"] == big
    beyond = json.loads(decision_row(raw_event(b'{"risk":1e400,"actor":1.5,"domain":"d"}')))
    assert (beyond["RiskScore"], beyond["Actor"], beyond["Domain"]) == (None, "1.5", "d")
    pretty = json.loads(decision_row(raw_event(f'{{\n"actor": {big}\n}}'.encode())))
    assert pretty["Payload"] == {"actor": big}


def test_oversized_payload_is_left_out_whole_never_cut() -> None:
    """A body over the 64 KB field limit: Payload null, PayloadTruncated true, columns kept."""
    big = "x" * (PAYLOAD_MAX_BYTES + 10)
    event = make_event(1, actor="agent:a" * 5000, note=big)
    row = json.loads(decision_row(event))
    assert row["Payload"] is None
    assert row["PayloadTruncated"] is True
    assert row["EventId"] == "evt-1"
    assert len(row["Actor"]) == TEXT_MAX_CHARS


def test_multi_line_body_is_re_encoded_compactly() -> None:
    """A pretty-printed body becomes compact JSON so the row stays one object."""
    body = b'{\n  "event_type": "decision_event.created",\n  "actor": "a"\n}\n'
    row = json.loads(decision_row(raw_event(body)))
    assert row["Payload"] == {"event_type": "decision_event.created", "actor": "a"}


def test_lone_surrogate_escapes_stay_valid_json() -> None:
    """Strings copied from the body may hold lone surrogate escapes: the row is still JSON."""
    body = b'{"event_type":"decision_event.created","actor":"\\ud800x","decision":"blocked"}'
    row = json.loads(decision_row(raw_event(body)))
    assert row["Actor"] == "\ud800x"


def test_plan_calls_packs_in_order_under_the_limit() -> None:
    """Calls keep row order, stay under the limit, and rows too big alone are set apart."""
    rows = [b"a" * 40, b"b" * 40, b"c" * 200, b"d" * 10, b"e" * 50]
    calls, oversize = plan_calls(rows, 100)
    assert oversize == [2]
    assert calls == [[0, 1, 3], [4]]  # 2 + 40 + 1 + 40 + 1 + 10 = 94 bytes; +51 is over
    for call in calls:
        assert array_bytes([rows[i] for i in call]) <= 100


def test_body_is_a_gzip_json_array() -> None:
    """The call body inflates to exactly the JSON array of the rows."""
    rows = [decision_row(make_event(i)) for i in range(3)]
    body = body_for(rows, 3)
    raw = gzip.decompress(body)
    assert len(raw) == array_bytes(rows)
    assert [r["EventId"] for r in json.loads(raw)] == ["evt-0", "evt-1", "evt-2"]
    assert body_for(rows, 3) == body, "fixed mtime: the same rows give the same bytes"
    assert gzip.decompress(body_for([], 3)) == b"[]"


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
KEYS = [
    "actor",
    "decision",
    "result",
    "risk_score",
    "domain",
    "action",
    "rule_id",
    "rule",
    "patch",
    "previous",
    "allowed",
    "data",
]


@settings(max_examples=300, deadline=None)
@given(
    payload=st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), json_values, max_size=8),
    event_type=st.sampled_from(
        ["decision_event.created", "rule.patch_applied", "approval.created", "x.y", "rule"]
    ),
    occurred=st.none() | st.text(max_size=30) | st.datetimes().map(datetime.isoformat),
    indent=st.none() | st.just(2),
)
def test_any_body_gives_a_row_that_fits_its_declaration(
    payload: dict[str, Any], event_type: str, occurred: str | None, indent: int | None
) -> None:
    """Whatever BIGHUB sends, the row is JSON with exactly the declared, well-typed columns."""
    body = json.dumps({"event_type": event_type, **payload}, indent=indent).encode()
    event = raw_event(body, event_type, occurred_at=occurred)
    row = row_for(event, STREAMS)
    decoded = json.loads(row.data)
    typed(decoded, RULE_COLUMNS if event.category == "rule" else DECISION_COLUMNS)
    if not decoded["PayloadTruncated"]:
        assert decoded["Payload"] == json.loads(body)


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=300), max_size=60),
    limit=st.integers(min_value=50, max_value=1000),
)
def test_plan_calls_places_every_row_once(sizes: list[int], limit: int) -> None:
    """Every row lands in exactly one call (in order) or is set apart as too large."""
    rows = [b"x" * n for n in sizes]
    calls, oversize = plan_calls(rows, limit)
    placed = [i for call in calls for i in call]
    assert sorted(placed + oversize) == list(range(len(rows)))
    assert placed == sorted(placed)
    for call in calls:
        assert call
        assert array_bytes([rows[i] for i in call]) <= limit
    for i in oversize:
        assert len(rows[i]) + 2 > limit
