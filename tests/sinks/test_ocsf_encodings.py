"""``encoding = "ocsf"`` on stdout, Kafka and Splunk HEC; the export record stays the default."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest

from receiver.errors import ConfigError
from receiver.settings import load_settings
from sinks.kafka import KafkaConfig
from sinks.kafka.encoder import KeySpec, TopicTemplate, encode
from sinks.ocsf import mapper_for
from sinks.splunk_hec import Encoder, SplunkHecConfig
from sinks.stdout import StdoutConfig, StdoutSink
from tests.fakes.hec import TOKEN
from tests.harness import base_config
from tests.sinks.ocsf_support import VERSIONS, approval, decision, event_from, rule
from tests.sinks.ocsf_validator import assert_valid

EVENTS = [
    event_from(decision("blocked")),
    event_from(approval("approval.created"), event_id="evt_2"),
    event_from(rule(), event_id="evt_3"),
    event_from({"event_type": "webhook.ping"}, event_id="evt_4"),
]


@pytest.mark.parametrize("version", VERSIONS)
def test_stdout_writes_one_valid_ocsf_record_per_line(version: str) -> None:
    """stdout with encoding = "ocsf": JSON lines, each a valid record of the version."""
    out = io.BytesIO()
    sink = StdoutSink(StdoutConfig(name="out", encoding="ocsf", ocsf_version=version), stream=out)
    asyncio.run(sink.send(EVENTS))
    lines = out.getvalue().splitlines()
    assert len(lines) == len(EVENTS)
    records = [json.loads(line) for line in lines]
    for record in records:
        assert_valid(record, version)
    assert [r["class_uid"] for r in records] == [6003, 6003, 3004, 0]
    assert [r["metadata"]["uid"] for r in records] == ["evt_1", "evt_2", "evt_3", "evt_4"]


def test_export_record_stays_the_default() -> None:
    """Without an encoding setting the sinks write today's export record."""
    assert StdoutConfig(name="out").encoding == "export"
    out = io.BytesIO()
    asyncio.run(StdoutSink(StdoutConfig(name="out"), stream=out).send(EVENTS[:1]))
    assert json.loads(out.getvalue())["schema_version"] == 1


@pytest.mark.parametrize("version", VERSIONS)
def test_kafka_value_is_the_ocsf_record(version: str) -> None:
    """Kafka with encoding = "ocsf": the value is the record, a header names the version."""
    config = KafkaConfig(
        name="k", bootstrap_servers=["127.0.0.1:9092"], encoding="ocsf", ocsf_version=version
    )
    record = encode(
        EVENTS[0],
        TopicTemplate.parse("bighub.{category}"),
        KeySpec.parse("event_id"),
        mapper_for(config),
    )
    assert_valid(json.loads(record.value), version)
    headers = dict(record.headers)
    assert headers["ocsf_version"] == version.encode()
    assert "schema_version" not in headers
    assert record.key == b"evt_1"


def _hec(**extra: Any) -> Encoder:
    return Encoder.from_config(
        SplunkHecConfig(name="hec", url="https://splunk.example:8088", token=TOKEN, **extra)
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_hec_event_is_the_ocsf_record_with_an_ocsf_sourcetype(version: str) -> None:
    """HEC with encoding = "ocsf": sourcetype ocsf:bighub:<class>, event the record."""
    encoder = _hec(encoding="ocsf", ocsf_version=version)
    objects = [json.loads(encoder.event(e)) for e in EVENTS]
    assert [o["sourcetype"] for o in objects] == [
        "ocsf:bighub:api_activity",
        "ocsf:bighub:api_activity",
        "ocsf:bighub:entity_management",
        "ocsf:bighub:base_event",
    ]
    for obj in objects:
        assert_valid(obj["event"], version)
    assert objects[0]["fields"]["event_id"] == "evt_1"
    assert objects[0]["time"] == objects[0]["event"]["time"] / 1000


def test_hec_sourcetype_set_by_the_operator_wins() -> None:
    """An explicit sourcetype (global or per category) is kept in OCSF mode too."""
    encoder = _hec(encoding="ocsf", categories={"rule": {"sourcetype": "my:rules"}})
    assert json.loads(encoder.event(EVENTS[2]))["sourcetype"] == "my:rules"
    assert (
        json.loads(_hec(sourcetype="x:y", encoding="ocsf").event(EVENTS[0]))["sourcetype"] == "x:y"
    )
    assert json.loads(_hec().event(EVENTS[0]))["sourcetype"] == "bighub:decision"


def test_settings_read_the_ocsf_options_from_toml_tables(tmp_path: Path) -> None:
    """[sinks.ocsf] tables configure the mapping; unknown versions and keys are refused."""
    sink = {
        "name": "out",
        "type": "stdout",
        "encoding": "ocsf",
        "ocsf_version": "1.1.0",
        "ocsf": {"paths": {"agent_id": ["agent.id"]}, "risk_score_max": 100},
    }
    settings = load_settings(data=base_config(tmp_path, sinks=[sink]))
    loaded = settings.sinks[0]
    assert isinstance(loaded, StdoutConfig)
    assert loaded.ocsf.paths.agent_id == ["agent.id"]
    for bad in ({"ocsf_version": "1.9.0"}, {"ocsf": {"pathz": {}}}, {"encoding": "cef"}):
        with pytest.raises(ConfigError):
            load_settings(data=base_config(tmp_path, sinks=[{**sink, **bad}]))
