"""Helpers of the Kafka sink tests: events, configs, and a stand-in producer and admin
client behind the sink's own factory seams (kafka-python's real exception types)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from typing import Any

import kafka.errors as ke
import pytest
from pydantic import ValidationError

from sinks.base import Event
from sinks.kafka import KafkaConfig, KafkaSink

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


class FakeFuture:
    """kafka-python's FutureRecordMetadata surface; ``deferred`` ones end at flush()."""

    def __init__(
        self, error: BaseException | None = None, delay: float = 0.0, *, deferred: bool = False
    ) -> None:
        self.error = error
        self.ready_at = math.inf if deferred else time.monotonic() + delay

    def resolve(self, error: BaseException | None) -> None:
        self.error = error
        self.ready_at = time.monotonic()

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
    """Follows kafka-python's KafkaProducer surface the sink uses.

    With ``plan.broker_max_message_bytes`` set, it behaves like a broker whose topic has
    ``max.message.bytes``: the records handed over since the last flush form one
    producer batch per topic, and a batch larger than the limit is refused whole, every
    record's future failing with ``MessageSizeTooLargeError`` (error code 10).
    """

    def __init__(self, plan: FakePlan, settings: dict[str, Any]) -> None:
        self.plan = plan
        self.settings = settings
        self.sent: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = []
        self.closed = False
        self.open_batches: dict[str, list[tuple[str, int, FakeFuture]]] = {}
        self.flushes = 0

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
            if self.plan.broker_max_message_bytes is None:
                self.plan.delivered.append(event_id)
                return FakeFuture(self.plan.fail.get(event_id), self.plan.ack_seconds)
            future = FakeFuture(deferred=True)
            batch = self.open_batches.setdefault(topic, [])
            batch.append((event_id, len(key) + len(value), future))
            return future
        finally:
            with self.plan.lock:
                self.plan.active -= 1

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1
        limit = self.plan.broker_max_message_bytes
        for batch in self.open_batches.values():
            size = sum(n for _, n, _ in batch)
            refused = limit is not None and size > limit
            for event_id, _, future in batch:
                if refused:
                    future.resolve(
                        ke.MessageSizeTooLargeError(
                            "The request included a message larger than the max message"
                            " size the server will accept."
                        )
                    )
                else:
                    self.plan.delivered.append(event_id)
                    future.resolve(None)
        self.open_batches.clear()

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


class FakeAdmin:
    """Follows kafka-python's KafkaAdminClient.describe_topics (error codes per topic)."""

    def __init__(self, plan: FakePlan, settings: dict[str, Any]) -> None:
        self.plan = plan
        self.settings = settings
        self.closed = False

    def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        self.plan.described.append(list(topics))
        return [
            {
                "name": t,
                "error_code": self.plan.topic_errors.get(t, 0 if t in self.plan.topics else 3),
            }
            for t in topics
        ]

    def close(self) -> None:
        self.closed = True


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
        # (logger, message, args) that the connect logs before refusing, as
        # kafka-python logs a failed bootstrap attempt
        self.connect_logs: list[tuple[str, str, tuple[Any, ...]]] = []
        self.connects = 0
        self.broker_max_message_bytes: int | None = None
        self.delivered: list[str] = []
        self.topics: set[str] = set()  # topics the fake brokers hold
        self.topic_errors: dict[str, int] = {}  # topic -> Kafka error code
        self.described: list[list[str]] = []
        self.admins: list[FakeAdmin] = []

    def _connect(self) -> None:
        self.connects += 1
        for name, message, args in self.connect_logs:
            logging.getLogger(name).warning(message, *args)
        if self.refuse_connect is not None:
            raise self.refuse_connect

    def factory(self, settings: dict[str, Any]) -> FakeProducer:
        self._connect()
        producer = FakeProducer(self, settings)
        self.producers.append(producer)
        return producer

    def admin(self, settings: dict[str, Any]) -> FakeAdmin:
        self._connect()
        admin = FakeAdmin(self, settings)
        self.admins.append(admin)
        return admin


@pytest.fixture
def plan() -> FakePlan:
    return FakePlan()


def fake_sink(plan: FakePlan, **overrides: Any) -> KafkaSink:
    return KafkaSink(config(**overrides), producer_factory=plan.factory, admin_factory=plan.admin)


def run(coro: Any) -> Any:
    return asyncio.run(coro)
