"""Kafka sink without a broker: config, encoding, error mapping.

The send path is in test_kafka_send.py (a stand-in producer behind the sink's own
factory seams); the real producer is exercised in test_kafka_integration.py against
a real broker.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kafka.errors as ke
import pytest

from receiver.cli import main as cli_main
from receiver.errors import ConfigError
from receiver.settings import load_settings
from sinks import (
    PermanentSinkError,
    RetryableSinkError,
    SinkError,
    SinkUnavailableError,
    build_sink,
    sink_type,
)
from sinks.kafka import KafkaConfig, KafkaSink
from sinks.kafka import _client as kafka_client
from sinks.kafka._client import map_kafka_error
from sinks.kafka.config import codec_available
from sinks.kafka.encoder import KeySpec, TopicTemplate, encode, routable_topics
from tests.harness import base_config, write_config
from tests.sinks._kafka import PASSWORD, config, make_event, problems

# -- configuration ------------------------------------------------------------------------


def test_registered_as_kafka_with_safe_defaults() -> None:
    """type "kafka" is registered; acks=all, idempotence on, key event_id, topic per category."""
    assert sink_type("kafka") is KafkaSink
    cfg = config()
    assert (cfg.acks, cfg.enable_idempotence, cfg.key, cfg.topic, cfg.compression) == (
        "all",
        True,
        "event_id",
        "bighub.{category}",
        "none",
    )
    assert isinstance(build_sink(cfg), KafkaSink)


@pytest.mark.parametrize(
    ("template", "fields"),
    [
        ("bighub.{category}", {"category"}),
        ("siem-{source}.{event_type}", {"source", "event_type"}),
        ("audit_trail", set()),
    ],
)
def test_topic_templates_accepted(template: str, fields: set[str]) -> None:
    """Templates over {category}, {event_type} and {source} with Kafka's characters pass."""
    assert config(topic=template).topic_template.fields == fields


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("bighub.{tenant}", "unknown placeholder {tenant}"),
        ("bighub.{category!r}", "no format spec or conversion"),
        ("bighub.{category:>10}", "no format spec or conversion"),
        ("bighub/{category}", "only ASCII letters"),
        ("bighub {category}", "only ASCII letters"),
        ("bighub.{category", "topic template"),
        ("..", "cannot be '.' or '..'"),
        ("", "is empty"),
        ("x" * 250, "longer than 249"),
        ("x" * 249 + "{category}", "longer than 249"),
    ],
)
def test_topic_templates_refused(template: str, why: str) -> None:
    """A template Kafka could not name a topic from is refused at config time."""
    text = problems(topic=template)
    assert text.startswith("topic:")
    assert why in text


@pytest.mark.parametrize("key", ["event_id", "actor", "rule_id", "action.tool", "a-b.c_d"])
def test_key_choices_accepted(key: str) -> None:
    """event_id, or a dotted path into the payload."""
    assert config(key=key).key == key


@pytest.mark.parametrize("key", ["", "actor.", ".actor", "a..b", "actor[0]", "$.actor"])
def test_bad_key_paths_refused(key: str) -> None:
    """Anything but dot-separated names is refused, naming the key."""
    assert problems(key=key).startswith("key:")


@pytest.mark.parametrize("codec", ["none", "gzip", "lz4", "zstd"])
def test_compression_needs_its_library(codec: str) -> None:
    """A codec is accepted exactly when the library kafka-python needs for it imports."""
    if codec_available(codec):
        assert config(compression=codec).compression == codec
    else:
        text = problems(compression=codec)
        assert text.startswith("compression:")
        assert "is not installed" in text


def test_sasl_ssl_config_with_secret_references(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Credentials come from env:/file: references and never show in a repr or dump."""
    monkeypatch.setenv("KAFKA_PASSWORD", PASSWORD)
    user_file = tmp_path / "user"
    user_file.write_text("bighub-siem\n")
    ca = tmp_path / "ca.pem"
    ca.write_text("not parsed at config time")
    cfg = config(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username=f"file:{user_file}",
        sasl_password="env:KAFKA_PASSWORD",
        ssl_cafile=str(ca),
    )
    assert cfg.sasl_username is not None
    assert cfg.sasl_password is not None
    assert cfg.sasl_username.get_secret_value() == "bighub-siem"
    assert cfg.sasl_password.get_secret_value() == PASSWORD
    assert PASSWORD not in repr(cfg)
    assert PASSWORD not in cfg.model_dump_json()


@pytest.mark.parametrize(
    ("overrides", "key", "why"),
    [
        ({"security_protocol": "SASL_SSL"}, "sasl_mechanism", "required when"),
        (
            {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"},
            "sasl_username",
            "required when",
        ),
        (
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "PLAIN",
                "sasl_username": "u",
            },
            "sasl_password",
            "required when",
        ),
        ({"sasl_mechanism": "PLAIN"}, "sasl_mechanism", "security_protocol is PLAINTEXT"),
        (
            {"security_protocol": "SSL", "sasl_username": "u"},
            "sasl_username",
            "security_protocol is SSL",
        ),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI"},
            "sasl_mechanism",
            "PLAIN",
        ),
        ({"ssl_cafile": "/etc/hosts"}, "ssl_cafile", "security_protocol is PLAINTEXT"),
        (
            {"security_protocol": "SSL", "ssl_cafile": "/nonexistent/ca.pem"},
            "ssl_cafile",
            "no such",
        ),
        ({"security_protocol": "SSL", "ssl_keyfile": "/etc/hosts"}, "ssl_keyfile", "ssl_certfile"),
        ({"ssl_check_hostname": False}, "ssl_check_hostname", "security_protocol is PLAINTEXT"),
        ({"acks": 1}, "acks", "idempotent producer"),
        ({"acks": 0, "enable_idempotence": False}, "acks", "Input should be"),
        ({"request_timeout_ms": 200_000}, "delivery_timeout_ms", "at least"),
        ({"bootstrap_servers": ["kafka"]}, "bootstrap_servers", "host:port"),
        ({"bootstrap_servers": []}, "bootstrap_servers", "at least 1"),
    ],
)
def test_inconsistent_settings_name_the_key(overrides: dict[str, Any], key: str, why: str) -> None:
    """Contradicting security settings are refused, and the message names the key."""
    text = problems(**overrides)
    assert key in text
    assert why in text


def test_check_config_reports_the_bad_key_without_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bighub-siem check-config` exits 2 and names sinks.0.sasl_mechanism; no password."""
    monkeypatch.setenv("KAFKA_PASSWORD", PASSWORD)
    sink = {
        "name": "kafka",
        "type": "kafka",
        "bootstrap_servers": ["127.0.0.1:9092"],
        "security_protocol": "SASL_SSL",
        "sasl_username": "bighub-siem",
        "sasl_password": "env:KAFKA_PASSWORD",
    }
    path = write_config(tmp_path / "c.toml", base_config(tmp_path, sinks=[sink]))
    assert cli_main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "sinks.0.sasl_mechanism: Value error, required when security_protocol is SASL_SSL" in err
    assert PASSWORD not in err


def test_settings_accept_a_kafka_sink(tmp_path: Path) -> None:
    """The receiver's settings union knows the kafka type."""
    sink = {"name": "k", "type": "kafka", "bootstrap_servers": ["broker-1:9092"]}
    settings = load_settings(data=base_config(tmp_path, sinks=[sink]))
    assert isinstance(settings.sinks[0], KafkaConfig)
    with pytest.raises(ConfigError) as info:
        load_settings(data=base_config(tmp_path, sinks=[{**sink, "acks": "most"}]))
    assert any(p.startswith("sinks.0.acks:") for p in info.value.problems)


# -- encoding -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "topic"),
    [
        ("decision_event.created", "bighub.decision"),
        ("rule.patch_applied", "bighub.rule"),
        ("approval.created", "bighub.approval"),
        ("webhook.ping", "bighub.other"),
    ],
)
def test_record_per_category(event_type: str, topic: str) -> None:
    """Topic from the template, key = event id, five headers, value = export record."""
    event = make_event(7, event_type, actor="agent:a")
    record = encode(event, TopicTemplate.parse("bighub.{category}"), KeySpec.parse("event_id"))
    assert record.topic == topic
    assert record.key == b"evt_7"
    assert record.headers == [
        ("event_id", b"evt_7"),
        ("event_type", event_type.encode()),
        ("category", topic.split(".")[1].encode()),
        ("schema_version", b"1"),
        ("content-type", b"application/json"),
    ]
    assert record.value == event.export_json()
    assert json.loads(record.value) == event.export_record()


def test_template_over_event_type_and_source() -> None:
    """{event_type} and {source} render from the event."""
    record = encode(
        make_event(), TopicTemplate.parse("{source}.{event_type}"), KeySpec.parse("event_id")
    )
    assert record.topic == "bighub.decision_event.created"


def test_event_type_kafka_cannot_name_is_permanent() -> None:
    """An event type with ':' rendered into the topic dead-letters that event alone."""
    with pytest.raises(PermanentSinkError, match=r"topic 'bighub\.rule:x'"):
        encode(
            make_event(1, "rule:x"), TopicTemplate.parse("bighub.{event_type}"), KeySpec.parse("a")
        )


@pytest.mark.parametrize(
    ("spec", "payload", "key"),
    [
        ("actor", {"actor": "agent:refund-bot"}, b"agent:refund-bot"),
        ("rule_id", {"rule_id": "rule_refund_limit"}, b"rule_refund_limit"),
        ("action.tool", {"action": {"tool": "refund_payment"}}, b"refund_payment"),
        ("action.amount", {"action": {"amount": 1250}}, b"1250"),
        ("flag", {"flag": True}, b"true"),
        ("actor", {}, b"evt_3"),
        ("actor", {"actor": None}, b"evt_3"),
        ("action", {"action": {"tool": "x"}}, b"evt_3"),
        ("action.tool", {"action": "refund"}, b"evt_3"),
        ("tags", {"tags": ["a"]}, b"evt_3"),
    ],
)
def test_key_from_payload_path_falls_back_to_event_id(
    spec: str, payload: dict[str, Any], key: bytes
) -> None:
    """A payload path gives the key; missing, null or non-scalar falls back to the event id."""
    assert KeySpec.parse(spec).key_for(make_event(3, **payload)) == key


@pytest.mark.parametrize(
    ("template", "events", "topics", "note"),
    [
        (
            "bighub.{category}",
            ["*"],
            ["bighub.approval", "bighub.decision", "bighub.other", "bighub.rule"],
            "",
        ),
        (
            "bighub.{category}",
            ["decision_event.*", "rule.*"],
            ["bighub.decision", "bighub.rule"],
            "",
        ),
        ("audit", ["*"], ["audit"], ""),
        (
            "t.{event_type}",
            ["decision_event.created", "rule.*"],
            ["t.decision_event.created"],
            "glob",
        ),
        ("t.{source}", ["*"], [], "{source}"),
    ],
)
def test_routable_topics(template: str, events: list[str], topics: list[str], note: str) -> None:
    """health() checks the fixed topics, or one per category the routes can produce."""
    found, why = routable_topics(TopicTemplate.parse(template), events)
    assert found == topics
    assert note in why


# -- error mapping ----------------------------------------------------------------------


ERROR_TABLE: list[tuple[BaseException, type[SinkError]]] = [
    # the record itself is refused: this event only
    (ke.MessageSizeTooLargeError("5496 bytes"), PermanentSinkError),
    (ke.RecordListTooLargeError(), PermanentSinkError),
    (ke.InvalidRecordError(), PermanentSinkError),
    (ke.InvalidTopicError(), PermanentSinkError),
    (ke.InvalidTimestampError(), PermanentSinkError),
    # the cluster cannot be reached or refuses this client: wait, no attempt charged
    (ke.KafkaTimeoutError("Unable to bootstrap"), SinkUnavailableError),
    (ke.KafkaConnectionError("111 ECONNREFUSED"), SinkUnavailableError),
    (ke.NodeNotReadyError(), SinkUnavailableError),
    (ke.MetadataEmptyBrokerList(), SinkUnavailableError),
    (ke.BrokerNotAvailableError(), SinkUnavailableError),
    (ke.UnknownTopicOrPartitionError(), SinkUnavailableError),
    (ke.AuthorizationError(), SinkUnavailableError),
    (ke.TopicAuthorizationFailedError(), SinkUnavailableError),
    (ke.ClusterAuthorizationFailedError(), SinkUnavailableError),
    (ke.TransactionalIdAuthorizationFailedError(), SinkUnavailableError),
    (ke.SaslAuthenticationFailedError(), SinkUnavailableError),
    (ke.UnsupportedSaslMechanismError(), SinkUnavailableError),
    (ke.IllegalSaslStateError(), SinkUnavailableError),
    (ke.SecurityDisabledError(), SinkUnavailableError),
    (ke.UnsupportedVersionError(), SinkUnavailableError),
    (ke.UnsupportedCompressionTypeError(), SinkUnavailableError),
    (ke.KafkaConfigurationError(), SinkUnavailableError),
    (ConnectionRefusedError(111, "refused"), SinkUnavailableError),
    # anything else may pass on a second try: one attempt charged
    (ke.NotLeaderForPartitionError(), RetryableSinkError),
    (ke.LeaderNotAvailableError(), RetryableSinkError),
    (ke.RequestTimedOutError(), RetryableSinkError),
    (ke.NotEnoughReplicasError(), RetryableSinkError),
    (ke.NotEnoughReplicasAfterAppendError(), RetryableSinkError),
    (ke.CorruptRecordError(), RetryableSinkError),
    (ke.OutOfOrderSequenceNumberError(), RetryableSinkError),
    (ke.UnknownProducerIdError(), RetryableSinkError),
    (ke.InvalidProducerEpochError(), RetryableSinkError),
    (ke.IllegalStateError("KafkaProducer already closed!"), RetryableSinkError),
    (ke.UnknownError(), RetryableSinkError),
    (ke.KafkaError("Unexpected error in InitProducerIdResponse"), RetryableSinkError),
    (RuntimeError("surprise"), RetryableSinkError),
]


@pytest.mark.parametrize(
    ("exc", "expected"), ERROR_TABLE, ids=[type(e).__name__ for e, _ in ERROR_TABLE]
)
def test_kafka_errors_map_to_sink_errors(exc: BaseException, expected: type[SinkError]) -> None:
    """Each kafka-python error the sink can meet maps to exactly one of ours."""
    mapped = map_kafka_error(exc)
    assert type(mapped) is expected
    assert str(exc) in str(mapped) or type(exc).__name__ in str(mapped)


def test_error_table_covers_every_mapped_class() -> None:
    """Every class the mapping names has a row in the table above."""
    tested = {type(e) for e, _ in ERROR_TABLE}
    named = set(kafka_client._PERMANENT) | set(kafka_client._UNAVAILABLE)
    assert named <= tested
