"""The pure encoder: batch -> HEC event objects, metadata per category, request plans."""

from __future__ import annotations

import dataclasses
import gzip
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sinks.splunk_hec import Encoder, SplunkHecConfig
from sinks.splunk_hec.encoder import (
    event_time,
    gzip_body,
    indexed_fields,
    plan_pieces,
    plan_requests,
)
from tests.fakes.hec import TOKEN, make_event


def _config(**extra: Any) -> SplunkHecConfig:
    return SplunkHecConfig(name="hec", url="https://splunk.example:8088", token=TOKEN, **extra)


def _objects(body: bytes) -> list[dict[str, Any]]:
    """Read concatenated JSON objects the way HEC does."""
    text, pos, out = body.decode(), 0, []
    decoder = json.JSONDecoder()
    while pos < len(text):
        obj, pos = decoder.raw_decode(text, pos)
        out.append(obj)
    return out


def test_event_object_has_time_metadata_fields_and_the_export_record() -> None:
    """One HEC object: time, source, sourcetype by category, flat fields, record as event."""
    event = make_event(1, actor="agent:refund-bot", domain="payments", decision="blocked")
    obj = json.loads(Encoder.from_config(_config(index="bighub")).event(event))
    assert obj["time"] == 1795507200.123
    assert obj["sourcetype"] == "bighub:decision"
    assert obj["source"] == "bighub-siem"
    assert obj["index"] == "bighub"
    assert "host" not in obj
    assert obj["fields"] == {
        "event_id": "evt-1",
        "event_type": "decision_event.created",
        "category": "decision",
        "actor": "agent:refund-bot",
        "domain": "payments",
    }
    assert obj["event"] == event.export_record()


def test_time_has_millisecond_precision_and_falls_back_to_received_at() -> None:
    """occurred_at -> epoch seconds with 3 decimals; without it, the receipt time."""
    assert event_time(make_event(1, occurred_at="2026-11-24T08:00:00.987654+00:00")) == (
        1795507200.988
    )
    assert event_time(make_event(1, occurred_at="2026-11-24T08:00:00Z")) == 1795507200.0
    assert event_time(make_event(1, occurred_at=None, received_at=1700000000.12345)) == (
        1700000000.123
    )
    assert event_time(make_event(1, occurred_at="garbage", received_at=5.0)) == 5.0
    text = Encoder.from_config(_config()).event(make_event(1)).decode()
    assert '"time":1795507200.123,' in text


def test_indexed_fields_are_flat_only() -> None:
    """Objects, lists, null and huge strings stay out of fields; numbers/bools become text."""
    event = make_event(1)
    payload = {
        "actor": {"id": "agent:x"},
        "domain": ["a", "b"],
        "risk": 0.91,
        "blocked": True,
        "note": None,
        "big": "x" * 2000,
    }
    fields = indexed_fields(event, payload, ["actor", "domain", "risk", "blocked", "note", "big"])
    assert fields == {
        "event_id": "evt-1",
        "event_type": "decision_event.created",
        "category": "decision",
        "risk": "0.91",
        "blocked": "true",
    }
    assert all(isinstance(v, str) for v in fields.values())


def test_fields_are_found_under_payload_data_too() -> None:
    """BIGHUB's schema is not published: actor / domain may sit under ``data``."""
    fields = indexed_fields(make_event(1), {"data": {"actor": "user:a", "domain": "d"}}, ["actor"])
    assert fields["actor"] == "user:a"
    assert "domain" not in fields


def test_metadata_per_category_overrides_the_sink_defaults() -> None:
    """index / sourcetype / source / host per category, else the sink's, else built-ins."""
    cfg = _config(
        index="bighub",
        host="siem-1",
        categories={
            "rule": {"sourcetype": "custom:rule", "index": "bighub_rules"},
            "approval": {"source": "approvals", "host": "siem-2"},
        },
    )
    enc = Encoder.from_config(cfg)
    decision = json.loads(enc.event(make_event(1, "decision_event.created")))
    rule = json.loads(enc.event(make_event(2, "rule.patch_applied")))
    approval = json.loads(enc.event(make_event(3, "approval.created")))
    other = json.loads(enc.event(make_event(4, "webhook.ping")))
    assert (decision["sourcetype"], decision["index"], decision["host"]) == (
        "bighub:decision",
        "bighub",
        "siem-1",
    )
    assert (rule["sourcetype"], rule["index"]) == ("custom:rule", "bighub_rules")
    assert (approval["source"], approval["host"], approval["sourcetype"]) == (
        "approvals",
        "siem-2",
        "bighub:approval",
    )
    assert other["sourcetype"] == "bighub:event"
    assert other["fields"]["category"] == "other"


def test_one_sourcetype_for_every_category_when_set() -> None:
    """A sink-level sourcetype replaces the per-category defaults."""
    enc = Encoder.from_config(_config(sourcetype="bighub"))
    assert {
        json.loads(enc.event(make_event(i, t)))["sourcetype"]
        for i, t in enumerate(["decision_event.x", "rule.x", "approval.x", "other.x"])
    } == {"bighub"}


def test_concatenated_body_parses_back_in_order() -> None:
    """The batch body is HEC's format: objects back to back, read in order."""
    enc = Encoder.from_config(_config())
    batch = [make_event(i, text="ünïcode ✓") for i in range(5)]
    objs = _objects(b"".join(enc.events(batch)))
    assert [o["event"]["event_id"] for o in objs] == [f"evt-{i}" for i in range(5)]
    assert objs[0]["event"]["payload"]["text"] == "ünïcode ✓"


def test_plan_requests_respects_the_byte_limit_and_order() -> None:
    """Requests stay under max bytes; an oversized event goes alone; order is kept."""
    sizes = [40, 40, 40, 200, 10, 10]
    assert plan_requests(sizes, range(6), 100) == [[0, 1], [2], [3], [4, 5]]
    assert plan_requests(sizes, [1, 4, 5], 100) == [[1, 4, 5]]
    assert plan_requests(sizes, [], 100) == []


def test_plan_pieces_starts_small_then_takes_up_to_a_thousand() -> None:
    """A small first piece, so HEC has work while the rest is encoded; order is kept."""
    assert plan_pieces([]) == []
    assert plan_pieces(range(10)) == [list(range(10))]
    pieces = plan_pieces(range(2600))
    assert [len(p) for p in pieces] == [250, 1000, 1000, 350]
    assert [i for p in pieces for i in p] == list(range(2600))


def test_gzip_body_round_trips_and_is_deterministic() -> None:
    """gzip output decompresses to the body and is byte-stable (fixed mtime)."""
    body = b'{"event":"x"}' * 100
    assert gzip.decompress(gzip_body(body)) == body
    assert gzip_body(body) == gzip_body(body)
    assert len(gzip_body(body)) < len(body)


def test_payload_is_the_stored_body_verbatim() -> None:
    """The body is spliced in byte for byte; the result parses to the export record."""
    event = make_event(1, text="ünïcode ✓", nested={"a": [1, 2.5, None]})
    spaced = dataclasses.replace(
        event, body=b' {"event_id": "evt-1",\n "note": "two  spaces", "n": 1e3} \n'
    )
    for e in (event, spaced):
        raw = Encoder.from_config(_config()).event(e)
        assert raw.endswith(b',"payload":' + e.body.strip() + b"}}")
        assert json.loads(raw)["event"] == e.export_record()


def _strict(text: bytes) -> Any:
    """A strict JSON parser: NaN / Infinity are not JSON."""

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
# Literal JSON texts a serialiser would rewrite: huge exponents, escapes, U+2028, lone
# surrogate escapes, duplicate keys, spacing and line breaks between tokens.
ODD_TEXTS = st.sampled_from(
    [
        b'{"event_id":"evt-1","n":1e400}',
        b'{"event_id":"evt-1","n":-1E+999,"m":1.50}',
        b'{"event_id":"evt-1","s":"\\ud800 lone","t":"\\u2028\\/"}',
        b'{"event_id":"evt-1","actor":"x","actor":"y"}',
        b'{ "event_id" : "evt-1" ,\n\t"actor":"\\u00e9" }',
        '{"event_id":"evt-1","actor":"\u2028 ünï"}'.encode(),
        b'{"event_id":"evt-1","deep":' + b"[" * 200 + b"]" * 200 + b"}",
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    body=st.one_of(
        ODD_TEXTS,
        st.dictionaries(st.text(), JSON_VALUES, max_size=6).map(
            lambda d: json.dumps({"event_id": "evt-1", **d}).encode()
        ),
    ),
    fields=st.lists(st.sampled_from(["actor", "domain", "n", "s", "deep"]), max_size=3),
)
def test_every_event_object_is_strict_json_with_the_body_verbatim(
    body: bytes, fields: list[str]
) -> None:
    """Any JSON object body: the HEC object parses with a strict parser, its payload is
    the body byte for byte (spliced, never re-encoded), and the head is the export head."""
    event = dataclasses.replace(make_event(1), body=body)
    raw = Encoder.from_config(_config(payload_fields=sorted(set(fields)))).event(event)
    assert raw.endswith(b',"payload":' + body.strip() + b"}}")
    head = raw[: -len(body.strip()) - 2] + b"null}}"
    obj = _strict(head)
    assert obj["event"] == {**event.export_record_head(), "payload": None}
    assert obj["fields"]["event_id"] == "evt-1"
    assert all(isinstance(v, str) for v in obj["fields"].values())
    _strict(raw)
