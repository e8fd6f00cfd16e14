"""The Kafka sink: kafka-python's blocking producer, driven from one worker thread.

Every producer call (connect, send, flush) runs on the sink's own thread
(``_worker.Worker``): one call at a time, nothing queued behind it, and a time
limit past which the sink reports the cluster unavailable, so the event loop never
blocks and work never piles up behind a slow broker. ``send`` returns only after
every record's delivery future succeeded (``acks = "all"`` by default, idempotent
producer).

After any failure other than a refused record, the producer is closed and a new
one is built for the next attempt: a producer that gave up on records may still
hold them, and a broker that lost its state answers an idempotent producer with
errors it never recovers from (an unknown producer id it cannot re-register).

The parts: ``encoder`` (event -> record, pure), ``_client`` (kafka-python and its
error map), ``health`` (what ``health()`` checks), ``_worker`` (the thread).
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import structlog

from sinks.base import (
    Event,
    PartialDeliveryError,
    PermanentSinkError,
    SinkConfig,
    SinkError,
    SinkHealth,
    SinkUnavailableError,
)
from sinks.kafka import health
from sinks.kafka._worker import Worker, WorkerTimeout
from sinks.kafka.config import KafkaConfig
from sinks.kafka.encoder import KafkaRecord, encode, routable_topics
from sinks.ocsf import mapper_for

if TYPE_CHECKING:
    from sinks.kafka._client import ProducerClient

__all__ = ["KafkaSink"]

log = structlog.get_logger("bighub_siem.sink.kafka")
T = TypeVar("T")

# Slack over every library timeout before the worker gives up on a call.
_SLACK_SECONDS = 10.0
# Topics sent to, remembered for the health check (beyond those the routes name).
_SENT_TOPICS_MAX = 32


class KafkaSink:
    """Exports each event as one record: templated topic, chosen key, headers, export JSON."""

    config_model: ClassVar[type[SinkConfig]] = KafkaConfig

    def __init__(
        self,
        config: SinkConfig,
        *,
        producer_factory: Callable[[dict[str, Any]], Any] | None = None,
        admin_factory: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        """Build without I/O.

        Args:
            config: a ``KafkaConfig``.
            producer_factory: builds the producer from kafka-python keyword settings;
                ``kafka.KafkaProducer`` when None (tests pass a stand-in).
            admin_factory: builds the admin client health checks describe topics with;
                ``kafka.KafkaAdminClient`` when None.
        """
        if not isinstance(config, KafkaConfig):
            raise TypeError("KafkaSink needs a KafkaConfig")
        self.config = config
        self._factory = producer_factory
        self._admin_factory = admin_factory
        self._client_: ProducerClient | None = None
        self._sent_topics: dict[str, None] = {}  # insertion-ordered, bounded
        self._topic = config.topic_template
        self._key = config.key_spec
        self._mapper = mapper_for(config)
        self._health_topics, self._health_note = routable_topics(self._topic, config.events)
        self._worker = Worker(f"kafka-{config.name}")
        self._health_worker = Worker(f"kafka-{config.name}-health")
        # Longest a connect (TLS check + bootstrap + diagnosis) and a send (metadata +
        # delivery timeout) can take when every library timeout fires; past it the
        # client is stuck, and the sink says so instead of waiting.
        request = config.request_timeout_ms / 1000
        connect = 2 * request + 2 * len(config.bootstrap_servers)
        self._limit = connect + request + config.delivery_timeout_ms / 1000 + _SLACK_SECONDS
        self._health_limit = health.time_limit(config)
        self._closed = False
        self._warned = False

    @property
    def _client(self) -> ProducerClient:
        # Imported on first use: kafka-python is needed only once the sink connects.
        if self._client_ is None:
            from sinks.kafka._client import ProducerClient

            self._client_ = ProducerClient(self.config, self._factory, self._admin_factory)
        return self._client_

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._closed:
            raise SinkUnavailableError("kafka sink is closed")
        try:
            return await self._worker.run(fn, self._limit)
        except WorkerTimeout as exc:
            raise SinkUnavailableError(f"the Kafka client is stuck: {exc}") from None

    async def start(self) -> None:
        """Connect: bootstrap, authenticate, learn the brokers.

        Raises:
            SinkUnavailableError: kafka-python missing, brokers unreachable, or the
                handshake (TLS / SASL) failed; the message says which.
        """
        if not self._warned and importlib.util.find_spec("crc32c") is None:
            self._warned = True
            log.warning(
                "kafka_crc32c_missing",
                sink=self.config.name,
                detail="kafka-python computes CRC32C in pure Python; install crc32c"
                " (part of bighub-siem[kafka]) for several times the throughput",
            )
        client = self._client
        try:
            await self._run(client.producer)
        except SinkError as exc:
            # One line per failed attempt (the dispatcher logs only state changes).
            log.warning("kafka_start_failed", sink=self.config.name, error=str(exc))
            raise
        log.info(
            "kafka_connected",
            sink=self.config.name,
            servers=self.config.bootstrap_servers,
            protocol=self.config.security_protocol,
            idempotent=self.config.enable_idempotence,
            compression=self.config.compression,
        )

    async def send(self, batch: Sequence[Event]) -> None:
        if not batch:
            return
        client = self._client

        def work() -> tuple[list[SinkError | None], set[str]]:
            records = self._records(batch)
            topics = {r.topic for r in records if isinstance(r, KafkaRecord)}
            return client.deliver(records), topics

        outcomes, topics = await self._run(work)
        self._remember(topics)
        failures = {i: e for i, e in enumerate(outcomes) if e is not None}
        if not failures:
            return
        # Any failure other than a refused record fails the whole batch: records that did
        # land are sent again (consumers drop repeats by event_id), and per-key order holds
        # because the retry re-sends the batch in order.
        transient = [e for e in failures.values() if not isinstance(e, PermanentSinkError)]
        if transient:
            down = [e for e in transient if isinstance(e, SinkUnavailableError)]
            raise (down or transient)[0]
        if len(failures) == len(batch):
            raise next(iter(failures.values()))
        raise PartialDeliveryError(failures)

    def _records(self, batch: Sequence[Event]) -> list[KafkaRecord | SinkError]:
        """Encode in the worker thread (JSON work stays off the event loop)."""
        records: list[KafkaRecord | SinkError] = []
        for event in batch:
            try:
                records.append(encode(event, self._topic, self._key, self._mapper))
            except PermanentSinkError as exc:
                records.append(exc)
            except ValueError as exc:  # a body that is not JSON: it never will be
                records.append(PermanentSinkError(f"cannot encode the event: {exc}"))
        return records

    def _remember(self, topics: set[str]) -> None:
        for topic in topics:
            self._sent_topics.pop(topic, None)
            self._sent_topics[topic] = None
        while len(self._sent_topics) > _SENT_TOPICS_MAX:
            del self._sent_topics[next(iter(self._sent_topics))]

    async def health(self) -> SinkHealth:
        """Connect with a fresh client and describe the topics the routes name and the
        topics sent to lately, without creating any (see ``health``)."""
        client = self._client
        topics = sorted({*self._health_topics, *self._sent_topics})
        try:
            return await self._health_worker.run(
                lambda: health.check(client, topics, self._health_note), self._health_limit
            )
        except WorkerTimeout as exc:
            return SinkHealth(False, f"the Kafka client is stuck: {exc}")

    async def close(self) -> None:
        self._closed = True
        if self._client_ is not None:
            await asyncio.to_thread(self._client_.close)
        self._worker.stop()
        self._health_worker.stop()
