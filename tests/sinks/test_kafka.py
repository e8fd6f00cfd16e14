"""Kafka sink without a broker: config, encoding, error mapping, and the send path.

The send path runs against a stand-in producer passed through the sink's own
``producer_factory`` seam; the real producer is exercised in
test_kafka_integration.py against a real broker.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kafka.errors as ke
import pytest
from pydantic import ValidationError

from receiver.cli import main as cli_main
from receiver.errors import ConfigError
from receiver.settings import load_settings
from sinks import (
    PartialDeliveryError,
    PermanentSinkError,
    RetryableSinkError,
    SinkError,
    SinkUnavailableError,
    build_sink,
    sink_type,
)
from sinks.base import Event
from sinks.kafka import KafkaConfig, KafkaSink
from sinks.kafka import _client as kafka_client
from sinks.kafka._client import map_kafka_error
from sinks.kafka._worker import Worker, WorkerTimeout
from sinks.kafka.config import codec_available
from sinks.kafka.encoder import KeySpec, TopicTemplate, encode, routable_topics
from tests.fakes.tls import TlsListener, make_tls_files, tls_listener
from tests.harness import base_config, free_port, write_config

PASSWORD = "kafka-password-do-not-log-123"


def make_event(
    seq: int = 1,
    event_type: str = "decision_event.created",
    *,
    body: bytes | None = None,
    **payload: Any,
) -> Event:
    category = {"decision_event": "decision", "rule": "rule", "approval": "approval"}.get(
        event_type.split(".", 1)[0], "other"
    )
    if body is None:
        body = json.dumps({"event_id": f"evt_{seq}", "event_type": event_type, **payload}).encode()
    return Event(
        seq=seq,
        event_id=f"evt_{seq}",
        id_origin="body.event_id",
        event_type=event_type,
        category=category,
        occurred_at="2026-11-24T08:00:00Z",
        received_at=1_795_500_000.0,
        source="bighub",
        delivery_id=f"dlv_{seq}",
        body=body,
    )


def config(**overrides: Any) -> KafkaConfig:
    values: dict[str, Any] = {"name": "kafka", "bootstrap_servers": ["127.0.0.1:9092"]}
    return KafkaConfig.model_validate({**values, **overrides})


def problems(**overrides: Any) -> str:
    with pytest.raises(ValidationError) as info:
        config(**overrides)
    return "\n".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
        for e in info.value.errors(include_input=False)
    )


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


# -- the send path, against a stand-in producer ---------------------------------------------


class FakeFuture:
    def __init__(self, error: BaseException | None = None, delay: float = 0.0) -> None:
        self.error = error
        self.ready_at = time.monotonic() + delay

    @property
    def is_done(self) -> bool:
        return time.monotonic() >= self.ready_at

    @property
    def exception(self) -> BaseException | None:
        return self.error if self.is_done else None

    def get(self, timeout: float | None = None) -> object:
        wait = self.ready_at - time.monotonic()
        if wait > 0:
            if timeout is not None and timeout < wait:
                time.sleep(timeout)
                raise ke.KafkaTimeoutError("Timeout after waiting")
            time.sleep(wait)
        if self.error is not None:
            raise self.error
        return object()


class FakeProducer:
    """Follows kafka-python's KafkaProducer surface the sink uses."""

    def __init__(self, plan: FakePlan, settings: dict[str, Any]) -> None:
        self.plan = plan
        self.settings = settings
        self.sent: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = []
        self.closed = False

    def send(
        self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]
    ) -> FakeFuture:
        with self.plan.lock:
            self.plan.active += 1
            self.plan.max_active = max(self.plan.max_active, self.plan.active)
            self.plan.threads.add(threading.current_thread().name)
        try:
            time.sleep(self.plan.send_seconds)
            event_id = dict(headers)["event_id"].decode()
            if event_id in self.plan.raise_on_send:
                raise self.plan.raise_on_send[event_id]
            self.sent.append((topic, key, value, headers))
            return FakeFuture(self.plan.fail.get(event_id), self.plan.ack_seconds)
        finally:
            with self.plan.lock:
                self.plan.active -= 1

    def flush(self, timeout: float | None = None) -> None:
        return None

    def close(self, timeout: float | None = None) -> None:
        self.closed = True

    def partitions_for(self, topic: str) -> set[int]:
        return {0}


class FakePlan:
    """What the stand-in producers do, and what they saw."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.producers: list[FakeProducer] = []
        self.fail: dict[str, BaseException] = {}
        self.raise_on_send: dict[str, BaseException] = {}
        self.send_seconds = 0.0
        self.ack_seconds = 0.0
        self.active = 0
        self.max_active = 0
        self.threads: set[str] = set()
        self.refuse_connect: BaseException | None = None

    def factory(self, settings: dict[str, Any]) -> FakeProducer:
        if self.refuse_connect is not None:
            raise self.refuse_connect
        producer = FakeProducer(self, settings)
        self.producers.append(producer)
        return producer


@pytest.fixture
def plan() -> FakePlan:
    return FakePlan()


def fake_sink(plan: FakePlan, **overrides: Any) -> KafkaSink:
    return KafkaSink(config(**overrides), producer_factory=plan.factory)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_send_returns_once_every_future_succeeded(plan: FakePlan) -> None:
    """send() waits for every delivery acknowledgement before returning."""
    plan.ack_seconds = 0.2
    sink = fake_sink(plan)

    async def go() -> float:
        await sink.start()
        started = time.monotonic()
        await sink.send([make_event(i) for i in range(5)])
        elapsed = time.monotonic() - started
        await sink.close()
        return elapsed

    assert run(go()) >= 0.2
    assert [s[1] for s in plan.producers[0].sent] == [f"evt_{i}".encode() for i in range(5)]


def test_producer_runs_off_the_event_loop_one_call_at_a_time(plan: FakePlan) -> None:
    """A slow producer leaves the loop free; concurrent sends never overlap in the worker."""
    plan.send_seconds = 0.02
    sink = fake_sink(plan, name="slow")
    ticks = 0

    async def ticker(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    async def go() -> None:
        await sink.start()
        stop = asyncio.Event()
        task = asyncio.create_task(ticker(stop))
        await asyncio.gather(
            *(sink.send([make_event(10 * j + i) for i in range(10)]) for j in range(3))
        )
        stop.set()
        await task
        await sink.close()

    run(go())
    assert plan.max_active == 1
    assert plan.threads == {"kafka-slow"}
    assert ticks >= 20  # 30 sends x 20 ms = 0.6 s during which the loop kept running


def test_refused_record_is_dead_lettered_alone(plan: FakePlan) -> None:
    """A too-large record fails only its own position; the others are delivered."""
    plan.fail["evt_2"] = ke.MessageSizeTooLargeError("too large")
    plan.raise_on_send["evt_4"] = ke.MessageSizeTooLargeError("over max_request_size")
    sink = fake_sink(plan)

    async def go() -> PartialDeliveryError:
        await sink.start()
        with pytest.raises(PartialDeliveryError) as info:
            await sink.send([make_event(i) for i in range(1, 6)])
        await sink.send([make_event(9)])
        await sink.close()
        return info.value

    error = run(go())
    assert sorted(error.failures) == [1, 3]
    assert all(isinstance(e, PermanentSinkError) for e in error.failures.values())
    assert len(plan.producers) == 1  # a refused record does not cost the connection


def test_single_refused_record_is_permanent(plan: FakePlan) -> None:
    """A batch whose every record is refused raises PermanentSinkError."""
    plan.fail["evt_1"] = ke.MessageSizeTooLargeError("too large")
    sink = fake_sink(plan)
    with pytest.raises(PermanentSinkError, match="too large"):
        run(sink.send([make_event(1)]))


def test_unencodable_event_is_permanent(plan: FakePlan) -> None:
    """A body whose key cannot be read (not JSON) can never be encoded: dead letter."""
    sink = fake_sink(plan, key="actor")
    with pytest.raises(PermanentSinkError, match="cannot encode"):
        run(sink.send([make_event(1, body=b"\xff not json")]))


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ke.NotLeaderForPartitionError(), RetryableSinkError),
        (ke.KafkaTimeoutError("Expiring 1 record(s)"), SinkUnavailableError),
    ],
)
def test_transient_failure_fails_the_batch_and_renews_the_producer(
    plan: FakePlan, error: BaseException, expected: type[SinkError]
) -> None:
    """Any non-refusal fails the whole batch, and the next attempt gets a new producer."""
    plan.fail["evt_2"] = error
    sink = fake_sink(plan)

    async def go() -> None:
        with pytest.raises(expected) as info:
            await sink.send([make_event(i) for i in range(1, 4)])
        assert not isinstance(info.value, PartialDeliveryError)
        assert plan.producers[0].closed
        plan.fail.clear()
        await sink.send([make_event(i) for i in range(1, 4)])
        await sink.close()

    run(go())
    assert len(plan.producers) == 2
    assert len(plan.producers[1].sent) == 3


def test_unavailable_wins_over_retryable(plan: FakePlan) -> None:
    """When some records time out, the batch is reported unavailable (not charged)."""
    plan.fail["evt_1"] = ke.NotLeaderForPartitionError()
    plan.fail["evt_2"] = ke.KafkaTimeoutError("Expiring")
    with pytest.raises(SinkUnavailableError):
        run(fake_sink(plan).send([make_event(1), make_event(2)]))


def test_no_handover_after_the_producer_stops_taking_records(plan: FakePlan) -> None:
    """A metadata timeout in send() stops the batch at once instead of timing out per record."""
    plan.raise_on_send["evt_1"] = ke.KafkaTimeoutError("Failed to update metadata")
    sink = fake_sink(plan)
    with pytest.raises(SinkUnavailableError, match="metadata"):
        run(sink.send([make_event(i) for i in range(0, 50)]))
    assert len(plan.producers[0].sent) == 1  # evt_0 only; evt_2.. never handed over


def test_producer_settings(plan: FakePlan, monkeypatch: pytest.MonkeyPatch) -> None:
    """acks=all + idempotence by default; SASL credentials resolved; no idempotence -> 1 in flight."""
    monkeypatch.setenv("KAFKA_PASSWORD", PASSWORD)
    run(
        fake_sink(
            plan,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-256",
            sasl_username="bighub",
            sasl_password="env:KAFKA_PASSWORD",
            compression="gzip",
            linger_ms=20,
        ).start()
    )
    run(fake_sink(plan, acks=1, enable_idempotence=False).start())
    first, second = (p.settings for p in plan.producers)
    assert first["acks"] == -1
    assert first["enable_idempotence"] is True
    assert first["max_in_flight_requests_per_connection"] == 5
    assert first["compression_type"] == "gzip"
    assert first["linger_ms"] == 20
    assert first["sasl_mechanism"] == "SCRAM-SHA-256"
    assert first["sasl_plain_username"] == "bighub"
    assert first["sasl_plain_password"] == PASSWORD
    assert first["client_id"] == "bighub-siem.kafka"
    assert "ssl_context" not in first
    assert (second["acks"], second["enable_idempotence"]) == (1, False)
    assert second["max_in_flight_requests_per_connection"] == 1
    assert second["compression_type"] is None


def test_tls_files_that_do_not_load_fail_start_clearly(plan: FakePlan, tmp_path: Path) -> None:
    """A CA file that is not PEM fails start() with a message naming ssl_cafile."""
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate")
    sink = fake_sink(plan, security_protocol="SSL", ssl_cafile=str(ca))
    with pytest.raises(SinkUnavailableError, match="ssl_cafile"):
        run(sink.start())


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A TCP port that accepts connections and never speaks Kafka."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield int(server.getsockname()[1])
    server.close()


def test_start_says_why_it_cannot_connect(
    plan: FakePlan, silent_listener: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused port vs. a handshake that never completes: each gets its own message."""
    monkeypatch.setenv("KAFKA_PASSWORD", PASSWORD)
    plan.refuse_connect = ke.KafkaTimeoutError("Unable to bootstrap")
    closed = fake_sink(plan, bootstrap_servers=[f"127.0.0.1:{free_port()}"])
    with pytest.raises(SinkUnavailableError, match="no bootstrap server accepts connections"):
        run(closed.start())
    sasl = fake_sink(
        plan,
        bootstrap_servers=[f"127.0.0.1:{silent_listener}"],
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="bighub",
        sasl_password="env:KAFKA_PASSWORD",
    )
    with pytest.raises(SinkUnavailableError) as info:
        run(sasl.start())
    text = str(info.value)
    assert "accepts TCP connections but the Kafka handshake did not complete" in text
    assert "sasl_mechanism (SCRAM-SHA-512)" in text
    assert PASSWORD not in text


def test_close_is_idempotent_and_final(plan: FakePlan) -> None:
    """close() twice is safe; a send after close is refused as unavailable."""
    sink = fake_sink(plan)

    async def go() -> None:
        await sink.start()
        await sink.close()
        await sink.close()
        with pytest.raises(SinkUnavailableError, match="closed"):
            await sink.send([make_event(1)])

    run(go())
    assert plan.producers[0].closed


def test_health_checks_the_routable_topics(plan: FakePlan) -> None:
    """health() uses a fresh client and lists the topics it fetched metadata for."""
    health = run(fake_sink(plan, events=["decision_event.*"]).health())
    assert health.ok
    assert "bighub.decision" in health.detail
    plan.refuse_connect = ke.KafkaTimeoutError("Unable to bootstrap")
    down = run(fake_sink(plan, bootstrap_servers=[f"127.0.0.1:{free_port()}"]).health())
    assert not down.ok
    assert "no bootstrap server accepts connections" in down.detail


def test_secret_value_is_used_only_for_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sink's repr-able state never carries the password."""
    monkeypatch.setenv("KAFKA_PASSWORD", PASSWORD)
    cfg = config(
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username="u",
        sasl_password="env:KAFKA_PASSWORD",
    )
    assert PASSWORD not in repr(cfg) + str(cfg) + repr(KafkaSink(cfg).config)


# -- TLS settings, against a plain TLS listener --------------------------------------------


def tls_sink(
    plan: FakePlan, listener: TlsListener, host: str = "localhost", **extra: Any
) -> KafkaSink:
    settings: dict[str, Any] = {
        "bootstrap_servers": [f"{host}:{listener.port}"],
        "security_protocol": "SSL",
        "ssl_cafile": str(listener.files.ca),
        "request_timeout_ms": 1000,
        **extra,
    }
    return fake_sink(plan, **settings)


def test_tls_with_the_right_ca_and_host_name_connects(
    plan: FakePlan, tls_listener: TlsListener
) -> None:
    """ssl_cafile + hostname check: the handshake passes, then the client is built with it."""
    run(tls_sink(plan, tls_listener).start())
    # The client can finish its side before the listener thread counts the handshake.
    deadline = time.monotonic() + 5
    while tls_listener.handshakes < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert tls_listener.handshakes >= 1
    ctx = plan.producers[0].settings["ssl_context"]
    assert ctx.check_hostname is True
    assert ctx.minimum_version.name == "TLSv1_2"


def test_tls_hostname_mismatch_is_refused_unless_the_check_is_off(
    plan: FakePlan, tls_listener: TlsListener
) -> None:
    """The certificate names "localhost"; dialling 127.0.0.1 fails the hostname check."""
    with pytest.raises(SinkUnavailableError, match="certificate rejected"):
        run(tls_sink(plan, tls_listener, host="127.0.0.1").start())
    assert plan.producers == []
    run(tls_sink(plan, tls_listener, host="127.0.0.1", ssl_check_hostname=False).start())
    assert len(plan.producers) == 1


def test_tls_untrusted_ca_is_refused(plan: FakePlan, tls_listener: TlsListener) -> None:
    """Without our CA file, the system CAs do not trust the broker: a clear error."""
    settings = {
        "bootstrap_servers": [f"localhost:{tls_listener.port}"],
        "security_protocol": "SSL",
        "request_timeout_ms": 1000,
    }
    with pytest.raises(SinkUnavailableError, match="certificate rejected"):
        run(fake_sink(plan, **settings).start())


def test_tls_against_a_port_that_never_answers(plan: FakePlan, silent_listener: int) -> None:
    """A listener that never speaks TLS fails in request_timeout_ms, not never."""
    sink = fake_sink(
        plan,
        bootstrap_servers=[f"127.0.0.1:{silent_listener}"],
        security_protocol="SSL",
        request_timeout_ms=1000,
    )
    started = time.monotonic()
    with pytest.raises(SinkUnavailableError, match="no TLS answer within 1 s"):
        run(sink.start())
    assert time.monotonic() - started < 5


def test_client_certificate_is_loaded(plan: FakePlan, tmp_path: Path) -> None:
    """ssl_certfile / ssl_keyfile load into the context; a mismatched pair fails clearly."""
    one = make_tls_files(tmp_path / "one", ["localhost"])
    other = make_tls_files(tmp_path / "two", ["localhost"])
    sink = fake_sink(
        plan,
        bootstrap_servers=[f"127.0.0.1:{free_port()}"],
        security_protocol="SSL",
        ssl_cafile=str(one.ca),
        ssl_certfile=str(one.cert),
        ssl_keyfile=str(other.key),
    )
    with pytest.raises(SinkUnavailableError, match="ssl_certfile / ssl_keyfile: cannot load"):
        run(sink.start())


# -- the worker thread -----------------------------------------------------------------------


def test_worker_gives_up_on_a_stuck_call_without_queueing_behind_it() -> None:
    """A call past its limit -> WorkerTimeout; the next caller waits for it, then runs."""
    worker = Worker("w")
    release = threading.Event()
    calls: list[str] = []

    def stuck() -> str:
        release.wait(5)
        calls.append("stuck")
        return "late"

    async def go() -> None:
        with pytest.raises(WorkerTimeout):
            await worker.run(stuck, 0.1)
        with pytest.raises(WorkerTimeout):  # still stuck: nothing was queued behind it
            await worker.run(lambda: calls.append("second"), 0.1)
        release.set()
        assert await worker.run(lambda: "third", 5) == "third"
        with pytest.raises(ZeroDivisionError):
            await worker.run(lambda: 1 // 0, 5)
        worker.stop()

    run(go())
    assert calls == ["stuck"]
    assert worker._thread is None


def test_worker_thread_is_a_daemon() -> None:
    """A client call that never returns cannot hold the process open at exit."""
    worker = Worker("w")

    async def go() -> bool:
        return await worker.run(lambda: threading.current_thread().daemon, 5)

    assert run(go()) is True
    worker.stop()
