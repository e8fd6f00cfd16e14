"""The export record carries the body BIGHUB signed, byte for byte, and stays strict JSON.

Bodies are generated as JSON *texts* (not values), so everything a re-encoding would
change is exercised: huge exponents (1e400 parses to infinity, which JSON cannot
write back), duplicate keys, escapes, lone surrogate escapes, raw U+2028 / U+2029,
whitespace of every kind between tokens, and deep nesting.
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sinks.base import Event
from sinks.kafka.encoder import KeySpec, TopicTemplate, encode
from sinks.stdout import StdoutConfig, StdoutSink

WS = st.sampled_from(["", " ", "\t", "\n", "\r\n", "\r", " \n\t "])
NUMBERS = st.one_of(
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.builds(
        lambda m, e, sign: f"{m}{sign}{e}",
        st.integers(-99, 99),
        st.integers(0, 999),
        st.sampled_from(["e", "E", "e+", "E-", "e-"]),
    ),
    st.sampled_from(["1e400", "-1e400", "1E+400", "-0", "0.0e-0", "1.5e-400", "9" * 60]),
)
RAW_TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=12)
STRINGS = st.one_of(
    RAW_TEXT.map(lambda t: json.dumps(t, ensure_ascii=False)),  # raw UTF-8, U+2028 kept raw
    RAW_TEXT.map(json.dumps),  # \uXXXX escapes
    st.sampled_from(
        [
            '"\\ud800"',  # a lone surrogate escape: valid JSON, no UTF-8 form
            '"\\udfff\\ud800"',
            '"\u2028\u2029"',
            '"\\u2028"',
            '"\\/\\b\\f\\n\\r\\t\\"\\\\"',
            '""',
        ]
    ),
)
KEYS = st.one_of(st.sampled_from(['"a"', '"b"', '"event_type"', '"payload"']), STRINGS)
SCALARS = st.one_of(NUMBERS, STRINGS, st.sampled_from(["true", "false", "null"]))


@st.composite
def _joined(draw: st.DrawFn, items: list[str], open_: str, close: str) -> str:
    parts = [open_, draw(WS)]
    for i, item in enumerate(items):
        if i:
            parts += [draw(WS), ",", draw(WS)]
        parts.append(item)
    parts += [draw(WS), close]
    return "".join(parts)


def _containers(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    arrays = st.lists(children, max_size=4).flatmap(lambda xs: _joined(xs, "[", "]"))
    members = st.lists(
        st.tuples(KEYS, WS, WS, children).map(lambda m: f"{m[0]}{m[1]}:{m[2]}{m[3]}"),
        max_size=4,
    )
    return st.one_of(arrays, members.flatmap(lambda xs: _joined(xs, "{", "}")))


VALUES = st.recursive(SCALARS, _containers, max_leaves=25)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A JSON object text with an event type, as ingress admits it."""
    members = [f'"event_type"{draw(WS)}:{draw(WS)}"rule.x"']
    for key, value in draw(st.lists(st.tuples(KEYS, VALUES), max_size=5)):
        members.append(f"{key}{draw(WS)}:{draw(WS)}{value}")
    text = draw(WS) + draw(_joined(members, "{", "}")) + draw(WS)
    return text.encode("utf-8")


def _reject(name: str) -> Any:
    raise ValueError(f"{name} is not strict JSON")


def strict_loads(data: bytes) -> Any:
    """A strict parser: UTF-8 only, no NaN / Infinity, no control characters in strings."""
    return json.loads(data.decode("utf-8"), parse_constant=_reject, strict=True)


def event(body: bytes) -> Event:
    return Event(
        seq=1,
        event_id="evt\u2028-é",
        id_origin="body.event_id",
        event_type="rule.x",
        category="rule",
        occurred_at=None,
        received_at=1_795_500_000.25,
        source="bighub",
        delivery_id=None,
        body=body,
        signature="v1=abc",
        timestamp="1795500000",
    )


def head_of(e: Event) -> bytes:
    head = json.dumps(e.export_record_head(), separators=(",", ":"), ensure_ascii=False)
    return head[:-1].encode("utf-8") + b',"payload":'


def payload_bytes(e: Event, line: bytes) -> bytes:
    head = head_of(e)
    assert line.startswith(head)
    assert line.endswith(b"}")
    return line[len(head) : -1]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(bodies())
def test_stdout_line_is_strict_json_with_the_body_verbatim(body: bytes) -> None:
    """One line, strict JSON, payload = the body (raw CR/LF, only whitespace, as spaces)."""
    e = event(body)
    line = e.export_json()
    assert b"\n" not in line
    assert b"\r" not in line
    record = strict_loads(line)
    assert record["payload"] == json.loads(body)
    assert record["event_id"] == e.event_id
    assert payload_bytes(e, line) == body.replace(b"\r", b" ").replace(b"\n", b" ")
    if b"\n" not in body and b"\r" not in body:
        assert payload_bytes(e, line) == body


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(bodies())
def test_kafka_value_is_strict_json_with_the_body_byte_for_byte(body: bytes) -> None:
    """The Kafka value keeps every byte of the body, line breaks included."""
    e = event(body)
    record = encode(e, TopicTemplate.parse("bighub.{category}"), KeySpec.parse("event_id"))
    assert strict_loads(record.value)["payload"] == json.loads(body)
    assert payload_bytes(e, record.value) == body


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(bodies(), min_size=1, max_size=5))
def test_stdout_sink_writes_one_line_per_event(batch: list[bytes]) -> None:
    """Split on newlines only, the sink's output is one strict JSON record per event."""
    out = io.BytesIO()
    events = [event(b) for b in batch]
    asyncio.run(StdoutSink(StdoutConfig(name="c"), stream=out).send(events))
    lines = out.getvalue().split(b"\n")
    assert lines[-1] == b""
    assert lines[:-1] == [e.export_json() for e in events]
    assert [strict_loads(x)["payload"] for x in lines[:-1]] == [json.loads(b) for b in batch]


def test_the_bodies_of_issue_11() -> None:
    """1e400, deep nesting, duplicate keys, escapes and U+2028 are exported verbatim."""
    deep = b'{"event_type":"rule.x","d":' + b"[" * 500 + b"1" + b"]" * 500 + b"}"
    for body in (
        b'{"event_type":"rule.x","x":1e400,"y":-1E+400,"z":1.5e-400}',
        deep,
        b'{"event_type":"rule.x","a":1,"a":2}',
        b'{"event_type":"rule.x","s":"\\u0000\\ud800\\"\\\\ \xe2\x80\xa8 \xe2\x80\xa9"}',
        b'{\r\n  "event_type": "rule.x",\n  "n": [1,\t2]\n}\n',
    ):
        e = event(body)
        line = e.export_json()
        strict_loads(line)
        assert payload_bytes(e, line) == body.replace(b"\r", b" ").replace(b"\n", b" ")
        value = encode(e, TopicTemplate.parse("t"), KeySpec.parse("event_id")).value
        strict_loads(value)
        assert payload_bytes(e, value) == body
    assert b"Infinity" not in event(b'{"event_type":"rule.x","x":1e400}').export_json()


_TEXT = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40)


@given(
    event_id=_TEXT.filter(bool),
    event_type=_TEXT.filter(bool),
    occurred_at=st.none() | _TEXT,
    delivery_id=st.none() | _TEXT,
    source=_TEXT.filter(bool),
    received_at=st.floats(min_value=0, max_value=4e9, allow_nan=False),
)
def test_hand_built_head_is_what_the_json_encoder_makes(
    event_id: str,
    event_type: str,
    occurred_at: str | None,
    delivery_id: str | None,
    source: str,
    received_at: float,
) -> None:
    """The export head written by hand is, byte for byte, the JSON encoder's text of
    export_record_head() (escapes, non-ASCII, nulls, the received_at format)."""
    event = Event(
        1,
        event_id,
        "body",
        event_type,
        "other",
        occurred_at,
        received_at,
        source,
        delivery_id,
        b"{}",
    )
    expected = json.dumps(event.export_record_head(), separators=(",", ":"), ensure_ascii=False)
    assert event.export_json() == expected[:-1].encode() + b',"payload":{}}'


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_received_at_is_formatted_as_datetime_does(ts: float) -> None:
    """The fast millisecond formatter agrees with datetime.isoformat (half-even rounding of
    microseconds, then cut to milliseconds)."""
    from datetime import datetime, timezone

    from sinks.base import _iso

    expected = datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds")
    assert _iso(ts) == expected
