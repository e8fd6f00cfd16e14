"""The tolerant deliveries parser, the error mapping, the table and [upstream] settings."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from bighub import (
    BighubAPIError,
    BighubAuthError,
    BighubError,
    BighubNetworkError,
    BighubRateLimitError,
    BighubTimeoutError,
    BighubValidationError,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from receiver.deliveries import Delivery, parse_deliveries
from receiver.errors import ConfigError
from receiver.reconcile import (
    Row,
    RunReport,
    WebhookReport,
    render_table,
    upstream_error,
)
from receiver.settings import load_settings
from tests.harness import ROOT, base_config

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


@pytest.mark.parametrize(
    "answer",
    [
        [{"id": 7, "status": "failed", "event_id": "evt_1"}],
        {"deliveries": [{"id": 7, "status": "failed", "event_id": "evt_1"}]},
        {"items": [{"delivery_id": "7", "status": "FAILED", "event_id": "evt_1"}]},
        {"data": [{"id": "7", "success": False, "payload": {"event_id": "evt_1"}}]},
        {"data": {"items": [{"id": 7, "status": "dead", "event": {"id": "evt_1"}}]}},
        {"results": [{"id": 7, "state": "error", "payload": '{"event_id":"evt_1"}'}]},
    ],
)
def test_accepts_every_documented_shape(answer: object) -> None:
    """List, deliveries/items/data (also nested) shapes, both id keys, all failed spellings."""
    parsed = parse_deliveries(answer)
    assert parsed.problem is None
    assert parsed.skipped == 0
    assert [(d.delivery_id, d.failed, d.event_id) for d in parsed.deliveries] == [
        ("7", True, "evt_1")
    ]


@pytest.mark.parametrize(
    ("entry", "failed"),
    [
        ({"id": 1, "status": "delivered"}, False),
        ({"id": 1, "status": "success", "success": True}, False),
        ({"id": 1, "status": "pending"}, False),
        ({"id": 1}, False),
        ({"id": 1, "success": False}, True),
        ({"id": 1, "status": "delivered", "success": False}, True),
        ({"id": 1, "status": " Error "}, True),
        ({"id": 1, "status": "dead_lettered"}, True),
    ],
)
def test_failed_is_status_or_success_false(entry: dict[str, Any], failed: bool) -> None:
    """A delivery is failed by its status word or success=false; unknown means not failed."""
    (delivery,) = parse_deliveries([entry]).deliveries
    assert delivery.failed is failed


def test_event_id_sources_in_order() -> None:
    """event_id beats payload.event_id beats payload.id; the delivery's own id is not one."""
    parsed = parse_deliveries(
        [
            {"id": 1, "event_id": "top", "payload": {"event_id": "inner"}},
            {"id": 2, "payload": {"event_id": "inner", "id": "other"}},
            {"id": 3, "payload": {"id": "body-id"}},
            {"id": 4, "body": '{"event_id": "from-text"}'},
            {"id": 5},
            {"id": 6, "event_id": ["not", "an", "id"], "payload": {"event_id": 42}},
            {"id": 7, "payload": "{broken"},
        ]
    )
    assert [d.event_id for d in parsed.deliveries] == [
        "top",
        "inner",
        "body-id",
        "from-text",
        None,
        "42",
        None,
    ]


def test_unreadable_entries_are_counted_not_fatal() -> None:
    """Entries without a usable id are skipped and counted; the rest are read."""
    parsed = parse_deliveries(
        [1, None, "x", {"status": "failed"}, {"id": "../../admin"}, {"id": True}, {"id": 9}]
    )
    assert parsed.skipped == 6
    assert [d.delivery_id for d in parsed.deliveries] == ["9"]


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ({}, "empty or not JSON"),
        ({"deliveries": "soon"}, "no deliveries list"),
        ("text", "not a list or an object"),
        (None, "not a list or an object"),
        (3.5, "not a list or an object"),
    ],
)
def test_unreadable_answer_is_a_problem(answer: object, problem: str) -> None:
    """An answer without a deliveries list yields no deliveries and says why."""
    parsed = parse_deliveries(answer)
    assert parsed.deliveries == ()
    assert parsed.problem is not None
    assert problem in parsed.problem


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "delivery_id",
                    "status",
                    "state",
                    "success",
                    "event_id",
                    "payload",
                    "event",
                    "body",
                    "data",
                    "deliveries",
                    "items",
                    "results",
                    "x",
                ]
            )
            | st.text(max_size=5),
            inner,
            max_size=6,
        )
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_arbitrary_json_never_raises(answer: object) -> None:
    """Whatever JSON BIGHUB answers, parsing returns; every id it yields is path-safe."""
    parsed = parse_deliveries(answer)
    for d in parsed.deliveries:
        assert isinstance(d, Delivery)
        assert _ID.fullmatch(d.delivery_id)
        assert d.event_id is None or 0 < len(d.event_id) <= 256
    if parsed.problem is not None:
        assert parsed.deliveries == ()
        assert parsed.skipped == 0


@settings(max_examples=150, deadline=None)
@given(st.lists(_json, max_size=8))
def test_list_entries_are_read_or_counted(entries: list[object]) -> None:
    """Every entry of a list answer is either a delivery or counted as skipped."""
    parsed = parse_deliveries(entries)
    assert parsed.problem is None
    assert len(parsed.deliveries) + parsed.skipped == len(entries)


@given(st.text(max_size=200))
def test_payload_text_never_raises(text: str) -> None:
    """An embedded payload given as arbitrary text is parsed or ignored."""
    parse_deliveries([{"id": 1, "payload": "{" + text}, {"id": 2, "payload": text}])


def test_deeply_nested_payload_text_is_ignored() -> None:
    """A payload text nested past the recursion limit does not escape as RecursionError."""
    deep = "{" + '"a":[' * 100_000
    (delivery,) = parse_deliveries([{"id": 1, "payload": deep}]).deliveries
    assert delivery.event_id is None


@pytest.mark.parametrize(
    ("exc", "kind", "transient"),
    [
        (BighubAuthError("Unauthorized"), "auth", True),
        (BighubRateLimitError(message="Too Many Requests", status_code=429), "rate_limited", True),
        (BighubAPIError(message="Internal Server Error", status_code=500), "server", True),
        (BighubAPIError(message="Bad Gateway", status_code=502), "server", True),
        (BighubAPIError(message="Request Timeout", status_code=408), "server", True),
        (BighubAPIError(message="Not Found", status_code=404), "rejected", False),
        (BighubAPIError(message="Conflict", status_code=409), "rejected", False),
        (BighubValidationError(message="Unprocessable", status_code=422), "rejected", False),
        (BighubTimeoutError("Request timed out"), "timeout", True),
        (BighubNetworkError("Network error"), "network", True),
        (BighubError("other"), "client", True),
        (ValueError("Insecure base_url is not allowed"), "client", True),
    ],
)
def test_every_client_error_maps_to_ours(exc: Exception, kind: str, transient: bool) -> None:
    """Each exception the bighub client raises becomes one UpstreamError kind."""
    err = upstream_error(exc)
    assert (err.kind, err.transient) == (kind, transient)
    assert str(err).startswith(f"{kind}: ")


def test_table_lists_failed_deliveries_and_summary() -> None:
    """The CLI table has a row per failed delivery, a summary and the dry-run note."""
    w = WebhookReport("wh_1", deliveries=3, failed=2, already_held=1, to_replay=1)
    w.rows = [Row("1001", "evt_a", "failed", "held"), Row("1002", None, "failed", "would_replay")]
    w.error("rate_limited", "replay 1003: rate_limited: 429")
    text = render_table(RunReport(dry_run=True, started_at=0.0, webhooks=[w]))
    lines = text.splitlines()
    assert lines[0].split() == ["WEBHOOK", "DELIVERY", "EVENT", "STATUS", "ACTION"]
    assert lines[1].split() == ["wh_1", "1001", "evt_a", "failed", "held"]
    assert lines[2].split() == ["wh_1", "1002", "-", "failed", "would_replay"]
    assert "wh_1: 3 deliveries, 2 failed, 1 already held" in text
    assert "error: replay 1003: rate_limited: 429" in text
    assert lines[-1].startswith("dry run:")
    assert json.loads(json.dumps(RunReport(True, 0.0, webhooks=[w]).to_dict()))["ok"] is False


def _upstream(**values: Any) -> dict[str, Any]:
    return {"api_key": "bh_key", "webhook_ids": ["wh_1"], **values}


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"webhook_ids": []}, "upstream.webhook_ids"),
        ({"webhook_ids": ["../admin"]}, "upstream.webhook_ids.0"),
        ({"base_url": "ftp://api.bighub.io"}, "upstream.base_url"),
        ({"base_url": "https://api.bighub.io/?x=1"}, "upstream.base_url"),
        ({"api_key": None}, "set api_key or bearer_token"),
        ({"interval_seconds": -1}, "upstream.interval_seconds"),
        ({"replay_rate_per_second": 0}, "upstream.replay_rate_per_second"),
        ({"unknown": 1}, "upstream.unknown"),
    ],
)
def test_upstream_settings_are_validated(
    tmp_path: Path, values: dict[str, Any], problem: str
) -> None:
    """Bad [upstream] values are refused at load, naming the key."""
    data = base_config(tmp_path, upstream=_upstream(**values))
    with pytest.raises(ConfigError) as err:
        load_settings(data=data)
    assert any(problem in p for p in err.value.problems), err.value.problems


def test_upstream_secret_never_in_repr(tmp_path: Path) -> None:
    """The API key is a SecretStr: reprs and dumps never show it."""
    settings = load_settings(data=base_config(tmp_path, upstream=_upstream()))
    assert settings.upstream is not None
    assert "bh_key" not in repr(settings.upstream)
    assert settings.upstream.base_url == "https://api.bighub.io"


def test_example_config_passes_check_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """deploy/examples/replay.toml is valid once its secrets are in the environment."""
    monkeypatch.setenv("BIGHUB_WEBHOOK_SECRET", "0123456789abcdef0123")
    monkeypatch.setenv("BIGHUB_API_KEY", "bh_example")
    monkeypatch.setenv("BIGHUB_SIEM_ADMIN_TOKEN", "0123456789abcdef0123")
    settings = load_settings(ROOT / "deploy" / "examples" / "replay.toml")
    assert settings.upstream is not None
    assert settings.upstream.interval_seconds == 300
