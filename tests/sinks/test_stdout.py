"""The stdout sink and the export record."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from sinks import Event, RetryableSinkError
from sinks.stdout import StdoutConfig, StdoutSink


def event(i: int = 1, body: bytes = b'{"event_type":"rule.x","n":1.5,"k":[1,"\xc3\xa9"]}') -> Event:
    return Event(
        seq=i,
        event_id=f"e{i}",
        id_origin="body.event_id",
        event_type="rule.x",
        category="rule",
        occurred_at="2026-11-24T08:00:00.000+00:00",
        received_at=1_795_500_000.25,
        source="bighub",
        delivery_id="d1",
        body=body,
        signature="v1=abc",
        timestamp="1795500000",
    )


def test_export_record_shape() -> None:
    """The record holds exactly the documented keys, with the payload verbatim."""
    rec = json.loads(event().export_json())
    assert rec == {
        "schema_version": 1,
        "event_id": "e1",
        "event_type": "rule.x",
        "category": "rule",
        "occurred_at": "2026-11-24T08:00:00.000+00:00",
        "received_at": "2026-11-24T06:00:00.250+00:00",
        "source": "bighub",
        "delivery_id": "d1",
        "payload": {"event_type": "rule.x", "n": 1.5, "k": [1, "é"]},
    }


def test_export_is_one_line_even_when_body_has_newlines() -> None:
    """Pretty-printed bodies still export as a single line."""
    line = event(body=b'{\n  "event_type": "rule.x",\n  "s": "a\\nb"\n}').export_json()
    assert b"\n" not in line
    assert json.loads(line)["payload"]["s"] == "a\nb"


def test_signature_and_body_not_in_repr() -> None:
    """An Event's repr never shows the body or the signature."""
    text = repr(event())
    assert "v1=abc" not in text
    assert 'event_type":' not in text


def test_writes_one_line_per_event() -> None:
    """send() writes one JSON line per event and flushes."""
    out = io.BytesIO()
    sink = StdoutSink(StdoutConfig(name="c"), stream=out)
    asyncio.run(sink.send([event(1), event(2)]))
    lines = out.getvalue().splitlines()
    assert [json.loads(x)["event_id"] for x in lines] == ["e1", "e2"]


def test_broken_pipe_is_retryable() -> None:
    """A closed stream is a retryable error, never a silent drop."""
    out = io.BytesIO()
    out.close()
    sink = StdoutSink(StdoutConfig(name="c"), stream=out)
    with pytest.raises(RetryableSinkError):
        asyncio.run(sink.send([event()]))
    assert asyncio.run(sink.health()).ok is False


def test_lone_surrogate_escapes_export() -> None:
    """A body with a lone surrogate escape (valid JSON, no UTF-8 form) still exports."""
    for body in (
        b'{"event_type":"rule.x","actor":"a\\ud800"}',
        b'{\n"event_type":"rule.x",\n"actor":"a\\ud800"}',
    ):
        line = event(body=body).export_json()
        assert json.loads(line)["payload"]["actor"] == "a\ud800"
