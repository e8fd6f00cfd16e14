"""kafka-python behind a small blocking interface: the only module that imports it.

``ProducerClient`` builds, keeps and closes the producer, hands records over and
reads their futures; ``map_kafka_error`` is the one place kafka-python's errors
become the sink errors of ``sinks.base``. Every method blocks: the sink calls them
from its own worker thread (``_worker``).

Error mapping, by what the dispatcher should do next:

- ``PermanentSinkError`` (dead letter, this event only): the record itself is
  refused — larger than the producer's ``max_request_size`` or the broker's
  ``message.max.bytes``, an invalid record or topic name.
- ``SinkUnavailableError`` (wait, no attempt charged): the cluster cannot be
  reached or refuses this client as a whole — connection refused, TLS or SASL
  handshake failure, authorization, a missing topic the broker will not create,
  and timeouts. The producer retries transient broker errors itself (leader
  moves, ``NOT_ENOUGH_REPLICAS``, request timeouts) until ``delivery_timeout_ms``;
  a record that still fails with a timeout means nothing reached the partition
  leader for that whole time, which is an outage, not a problem of these events.
  Charging attempts there would dead-letter a backlog during a long outage.
- ``RetryableSinkError`` (backoff, one attempt charged): everything else that may
  pass on a second try — a leader or producer-state error that surfaced anyway,
  a protocol hiccup, an error this table does not know.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import kafka.errors as ke

from sinks.base import (
    PermanentSinkError,
    RetryableSinkError,
    SinkError,
    SinkUnavailableError,
)
from sinks.kafka._preflight import diagnose, ssl_context, tls_check
from sinks.kafka.config import INSTALL_HINT, SASL_PROTOCOLS, TLS_PROTOCOLS, KafkaConfig
from sinks.kafka.encoder import KafkaRecord

__all__ = ["CLOSE_SECONDS", "ProducerClient", "close_quietly", "map_kafka_error"]

CLOSE_SECONDS = 5.0
# Slack over the producer's own delivery timeout before the sink stops waiting for a
# future itself: the producer fails expired records on its own, this is only a guard.
_GUARD_SECONDS = 5.0

_PERMANENT: tuple[type[BaseException], ...] = (
    ke.MessageSizeTooLargeError,
    ke.RecordListTooLargeError,
    ke.InvalidRecordError,
    ke.InvalidTopicError,
    ke.InvalidTimestampError,
)

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    ke.KafkaTimeoutError,
    ke.KafkaConnectionError,
    ke.NodeNotReadyError,
    ke.MetadataEmptyBrokerList,
    ke.BrokerNotAvailableError,
    ke.UnknownTopicOrPartitionError,
    ke.AuthorizationError,
    ke.SaslAuthenticationFailedError,
    ke.UnsupportedSaslMechanismError,
    ke.IllegalSaslStateError,
    ke.SecurityDisabledError,
    ke.UnsupportedVersionError,
    ke.UnsupportedCompressionTypeError,
    ke.KafkaConfigurationError,
)
# kafka-python 3 has no NoBrokersAvailable: unreachable brokers surface as a
# KafkaTimeoutError (bootstrap, metadata, record expiry) or a KafkaConnectionError.


def map_kafka_error(exc: BaseException) -> SinkError:
    """Classify an error raised by kafka-python (or by a socket under it).

    The message keeps the library's text (error names, sizes, topic names); it
    never holds a record's value, and kafka-python's texts hold no credentials.
    """
    if isinstance(exc, SinkError):
        return exc
    text = str(exc) or type(exc).__name__
    if isinstance(exc, _PERMANENT):
        return PermanentSinkError(f"kafka refused the record: {text}")
    if isinstance(exc, _UNAVAILABLE):
        return SinkUnavailableError(f"kafka unavailable: {text}")
    if isinstance(exc, ke.KafkaError):
        return RetryableSinkError(f"kafka error: {text}")
    if isinstance(exc, OSError):  # a socket or TLS error the library let through
        return SinkUnavailableError(f"kafka unreachable: {type(exc).__name__}: {exc}")
    return RetryableSinkError(f"unexpected {type(exc).__name__} from kafka-python: {text}")


def close_quietly(producer: Any, timeout: float) -> None:
    """Close a producer; if it will not close in time, stop its sender thread.

    close() flushes first and raises if records are still queued; they are pending
    in the spool anyway and will be sent again. When it raises, the sender thread
    would live on (and might still deliver): stop it without waiting.
    """
    try:
        producer.close(timeout=timeout)
    except Exception:
        with contextlib.suppress(Exception):
            producer._sender.force_close()
        with contextlib.suppress(Exception):
            producer.close(timeout=0)


class ProducerClient:
    """The sending producer (built on first use, renewed after a failure) and fresh
    producers for health checks. Thread-safe: ``close`` may come from another thread.

    Args:
        config: the sink's settings.
        factory: builds the producer from kafka-python keyword settings;
            ``kafka.KafkaProducer`` when None (tests pass a stand-in).
    """

    def __init__(
        self, config: KafkaConfig, factory: Callable[[dict[str, Any]], Any] | None = None
    ) -> None:
        self.config = config
        self._factory = factory
        self._lock = threading.Lock()  # guards _producer / _closed across threads
        self._producer: Any = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the sending producer ---------------------------------------------------------

    def producer(self) -> Any:
        """The sending producer, connecting first when there is none.

        Raises:
            SinkUnavailableError: closed, or the connect failed (the message says why).
        """
        with self._lock:
            if self._closed:
                raise SinkUnavailableError("kafka sink is closed")
            if self._producer is not None:
                return self._producer
        # Built outside the lock: bootstrapping can take request_timeout_ms, and close()
        # takes the lock from the event loop.
        producer = self.connect()
        with self._lock:
            keep = not self._closed
            if keep:
                self._producer = producer
        if not keep:  # close() ran meanwhile
            close_quietly(producer, 0)
            raise SinkUnavailableError("kafka sink is closed")
        return producer

    def discard(self) -> None:
        """Drop the sending producer; the next send builds a new one."""
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            close_quietly(producer, 0)

    def close(self, timeout: float = CLOSE_SECONDS) -> None:
        """Close for good. KafkaProducer is thread-safe: closing it from here also ends
        a send that is still waiting in the worker (its futures fail, events stay pending)."""
        with self._lock:
            self._closed = True
            producer, self._producer = self._producer, None
        if producer is not None:
            close_quietly(producer, timeout)

    # -- connecting -----------------------------------------------------------------------

    def connect(self, timeout_ms: int | None = None) -> Any:
        """A connected producer; ``timeout_ms`` bounds each step (default request_timeout_ms).

        Raises:
            SinkUnavailableError: kafka-python missing, TLS or bootstrap failed.
        """
        timeout_ms = timeout_ms or self.config.request_timeout_ms
        try:
            from kafka import KafkaProducer
            from kafka.net.compat import KafkaNetClient
        except ImportError as exc:
            raise SinkUnavailableError(f"kafka-python 3 is not installed ({INSTALL_HINT})") from exc
        settings = self.settings(timeout_ms)
        if "ssl_context" in settings:
            tls_check(self.config, settings["ssl_context"], timeout_ms / 1000)
        clients: list[Any] = []
        if self._factory is None:
            # KafkaProducer leaves its network client (sockets, selector) open when it
            # fails to bootstrap; building the client through the documented
            # kafka_client hook lets us close it, instead of leaking one per attempt.
            def tracked_client(**configs: Any) -> Any:
                client = KafkaNetClient(**configs)
                clients.append(client)
                return client

            settings["kafka_client"] = tracked_client
        factory = self._factory or (lambda settings: KafkaProducer(**settings))
        try:
            return factory(settings)
        except Exception as exc:
            for client in clients:
                with contextlib.suppress(Exception):
                    client.close()
            if isinstance(exc, ke.KafkaTimeoutError):  # the constructor times out bootstrapping
                raise SinkUnavailableError(diagnose(self.config, timeout_ms / 1000)) from exc
            raise map_kafka_error(exc) from exc

    def settings(self, timeout_ms: int) -> dict[str, Any]:
        """kafka-python's keyword settings for a producer."""
        cfg = self.config
        settings: dict[str, Any] = {
            "bootstrap_servers": list(cfg.bootstrap_servers),
            "client_id": cfg.client_id or f"bighub-siem.{cfg.name}",
            "acks": -1 if cfg.acks == "all" else 1,
            "enable_idempotence": cfg.enable_idempotence,
            # Without idempotence, one request in flight keeps per-partition order
            # when the producer retries.
            "max_in_flight_requests_per_connection": 5 if cfg.enable_idempotence else 1,
            "compression_type": None if cfg.compression == "none" else cfg.compression,
            "linger_ms": cfg.linger_ms,
            "max_request_size": cfg.max_request_size,
            # A producer batch stays well below the request (and the broker's
            # message.max.bytes) so a full batch is never refused as too large.
            "batch_size": max(16 * 1024, min(cfg.max_request_size // 2, 512 * 1024)),
            "request_timeout_ms": timeout_ms,
            "delivery_timeout_ms": cfg.delivery_timeout_ms,
            # Bounds every blocking call: waiting for metadata in send(), bootstrapping.
            "max_block_ms": timeout_ms,
            "bootstrap_timeout_ms": timeout_ms,
            "reconnect_backoff_max_ms": 5000,
            "security_protocol": cfg.security_protocol,
        }
        if cfg.security_protocol in SASL_PROTOCOLS:
            settings["sasl_mechanism"] = cfg.sasl_mechanism
            if cfg.sasl_username is not None and cfg.sasl_password is not None:
                settings["sasl_plain_username"] = cfg.sasl_username.get_secret_value()
                settings["sasl_plain_password"] = cfg.sasl_password.get_secret_value()
        if cfg.security_protocol in TLS_PROTOCOLS:
            settings["ssl_context"] = ssl_context(cfg)
        return settings

    # -- sending --------------------------------------------------------------------------

    def deliver(self, records: Sequence[KafkaRecord | SinkError]) -> list[SinkError | None]:
        """Hand every record over, flush, and read how each one ended.

        ``records`` holds, per batch position, the record to send or the error that
        already stopped it (an event that could not be encoded). Returns the outcome
        per position: None when the broker acknowledged the record.
        """
        producer = self.producer()
        outcomes: list[SinkError | None] = [None] * len(records)
        futures: list[tuple[int, Any]] = []
        stopped: SinkError | None = None
        for i, record in enumerate(records):
            if isinstance(record, SinkError):
                outcomes[i] = record
                continue
            if stopped is not None:
                outcomes[i] = stopped
                continue
            try:
                future = producer.send(
                    record.topic, value=record.value, key=record.key, headers=record.headers
                )
            except Exception as exc:
                mapped = map_kafka_error(exc)
                outcomes[i] = err = type(mapped)(f"topic {record.topic}: {mapped}")
                if not isinstance(err, PermanentSinkError):
                    # The producer takes nothing now (no metadata, closed): hand over no
                    # more, the batch is retried whole.
                    stopped = err
                continue
            futures.append((i, future))
        deadline = time.monotonic() + self.config.delivery_timeout_ms / 1000 + _GUARD_SECONDS
        with contextlib.suppress(Exception):
            # Sends lingering records now; the futures below say how each one ended.
            producer.flush(timeout=max(0.0, deadline - time.monotonic()))
        for i, future in futures:
            if future.is_done:  # after flush, nearly always: no per-record wait
                if future.exception is not None:
                    outcomes[i] = map_kafka_error(future.exception)
                continue
            try:
                future.get(timeout=max(0.0, deadline - time.monotonic()))
            except Exception as exc:
                outcomes[i] = map_kafka_error(exc)
        if any(e is not None and not isinstance(e, PermanentSinkError) for e in outcomes):
            self.discard()
        return outcomes

    # -- metadata ---------------------------------------------------------------------------

    @staticmethod
    def partitions(producer: Any, topic: str) -> None:
        """Fetch metadata for ``topic`` (raises the mapped error when it fails)."""
        try:
            producer.partitions_for(topic)
        except Exception as exc:
            raise map_kafka_error(exc) from exc
