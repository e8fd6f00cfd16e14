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
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

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
from sinks.kafka._worker import Worker, WorkerTimeout
from sinks.kafka.config import INSTALL_HINT, SASL_PROTOCOLS, TLS_PROTOCOLS, KafkaConfig
from sinks.kafka.encoder import encode, routable_topics
from sinks.ocsf import mapper_for

__all__ = ["KafkaSink"]

log = structlog.get_logger("bighub_siem.sink.kafka")
T = TypeVar("T")

_CLOSE_SECONDS = 5.0
# Each step of a health check (TLS, bootstrap, metadata per topic) gets at most this:
# the dispatcher gives the whole check 15 s.
_HEALTH_TIMEOUT_MS = 5000
# Slack over the producer's own delivery timeout before the sink stops waiting for a
# future itself: the producer fails expired records on its own, this is only a guard.
_GUARD_SECONDS = 5.0


class KafkaSink:
    """Exports each event as one record: templated topic, chosen key, headers, export JSON."""

    config_model: ClassVar[type[SinkConfig]] = KafkaConfig

    def __init__(
        self,
        config: SinkConfig,
        *,
        producer_factory: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        """Build without I/O.

        Args:
            config: a ``KafkaConfig``.
            producer_factory: builds the producer from kafka-python keyword settings;
                ``kafka.KafkaProducer`` when None (tests pass a stand-in).
        """
        if not isinstance(config, KafkaConfig):
            raise TypeError("KafkaSink needs a KafkaConfig")
        self.config = config
        self._factory = producer_factory
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
        self._limit = connect + request + config.delivery_timeout_ms / 1000 + _GUARD_SECONDS + 5
        step = min(config.request_timeout_ms, _HEALTH_TIMEOUT_MS) / 1000
        # Below the dispatcher's 15 s health timeout, so our own diagnosis is what
        # /readyz shows rather than a bare "TimeoutError".
        self._health_limit = min(
            14.0,
            3 * step
            + 2 * len(config.bootstrap_servers)
            + step * len(self._health_topics)
            + _CLOSE_SECONDS,
        )
        self._lock = threading.Lock()  # guards _producer / _closed across threads
        self._producer: Any = None
        self._closed = False
        self._warned = False

    # -- the hand-off to the worker thread -------------------------------------------

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._closed:
            raise SinkUnavailableError("kafka sink is closed")
        try:
            return await self._worker.run(fn, self._limit)
        except WorkerTimeout as exc:
            raise SinkUnavailableError(f"the Kafka client is stuck: {exc}") from None

    # -- protocol -----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect: bootstrap, authenticate, learn the brokers.

        Raises:
            SinkUnavailableError: kafka-python missing, brokers unreachable, or the
                handshake (TLS / SASL) failed; the message says which.
        """
        _quiet_library_logs()
        if not self._warned and importlib.util.find_spec("crc32c") is None:
            self._warned = True
            log.warning(
                "kafka_crc32c_missing",
                sink=self.config.name,
                detail="kafka-python computes CRC32C in pure Python; install crc32c"
                " (part of bighub-siem[kafka]) for several times the throughput",
            )
        try:
            await self._run(self._ensure_producer)
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
        outcomes = await self._run(lambda: self._send_blocking(batch))
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

    async def health(self) -> SinkHealth:
        """Connect with a fresh client and fetch metadata for the topics routes produce to.

        A fresh client, so the answer is about now (the sending producer caches
        metadata); it runs beside the worker, so a slow send does not hold it up.
        """
        _quiet_library_logs()
        try:
            return await self._health_worker.run(self._health_blocking, self._health_limit)
        except WorkerTimeout as exc:
            return SinkHealth(False, f"the Kafka client is stuck: {exc}")

    async def close(self) -> None:
        with self._lock:
            self._closed = True
            producer, self._producer = self._producer, None
        if producer is not None:
            # KafkaProducer is thread-safe: closing it from here also ends a send that
            # is still waiting in the worker (its futures fail, the rows stay pending).
            await asyncio.to_thread(_close_quietly, producer, _CLOSE_SECONDS)
        self._worker.stop()
        self._health_worker.stop()

    # -- in the worker thread -------------------------------------------------------------

    def _ensure_producer(self) -> Any:
        with self._lock:
            if self._closed:
                raise SinkUnavailableError("kafka sink is closed")
            if self._producer is not None:
                return self._producer
        # Built outside the lock: bootstrapping can take request_timeout_ms, and close()
        # takes the lock from the event loop.
        producer = self._new_producer()
        with self._lock:
            keep = self._adopt(producer)
        if not keep:  # close() ran meanwhile
            _close_quietly(producer, 0)
            raise SinkUnavailableError("kafka sink is closed")
        return producer

    def _adopt(self, producer: Any) -> bool:
        if self._closed:
            return False
        self._producer = producer
        return True

    def _discard_producer(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            _close_quietly(producer, 0)

    def _new_producer(self, timeout_ms: int | None = None) -> Any:
        """A connected producer; ``timeout_ms`` bounds each step (default request_timeout_ms)."""
        timeout_ms = timeout_ms or self.config.request_timeout_ms
        try:
            from kafka import KafkaProducer
            from kafka.errors import KafkaTimeoutError
            from kafka.net.compat import KafkaNetClient
        except ImportError as exc:
            raise SinkUnavailableError(f"kafka-python 3 is not installed ({INSTALL_HINT})") from exc
        from sinks.kafka.errors import map_kafka_error

        settings = self._producer_settings(timeout_ms)
        if "ssl_context" in settings:
            self._tls_check(settings["ssl_context"], timeout_ms / 1000)
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
            if isinstance(exc, KafkaTimeoutError):  # the constructor times out bootstrapping
                raise SinkUnavailableError(self._diagnose(timeout_ms / 1000)) from exc
            raise map_kafka_error(exc) from exc

    def _producer_settings(self, timeout_ms: int) -> dict[str, Any]:
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
            settings["ssl_context"] = self._ssl_context()
        return settings

    def _ssl_context(self) -> ssl.SSLContext:
        """Our own context, so a bad CA / certificate / key fails here with a clear message."""
        cfg = self.config
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = cfg.ssl_check_hostname
        try:
            if cfg.ssl_cafile is not None:
                ctx.load_verify_locations(cafile=str(cfg.ssl_cafile))
            else:
                ctx.load_default_certs()
        except (OSError, ssl.SSLError) as exc:
            raise SinkUnavailableError(
                f"ssl_cafile {cfg.ssl_cafile}: cannot load ({exc})"
            ) from None
        if cfg.ssl_certfile is not None:
            password = cfg.ssl_key_password.get_secret_value() if cfg.ssl_key_password else None
            try:
                ctx.load_cert_chain(
                    certfile=str(cfg.ssl_certfile),
                    keyfile=str(cfg.ssl_keyfile) if cfg.ssl_keyfile else None,
                    password=password,
                )
            except (OSError, ssl.SSLError) as exc:
                # The message names the files, never the key password.
                raise SinkUnavailableError(
                    f"ssl_certfile / ssl_keyfile: cannot load ({type(exc).__name__})"
                ) from None
        return ctx

    def _tls_check(self, ctx: ssl.SSLContext, timeout: float) -> None:
        """One TLS handshake of our own, bounded, before kafka-python tries.

        kafka-python's handshake has no timeout (a listener that never answers TLS
        hangs it), and its failures reach us only as a bootstrap timeout; this one
        says what is wrong: untrusted certificate, wrong host name, not TLS at all.
        """
        problems = []
        for server in self.config.bootstrap_servers:
            host, _, port = server.rpartition(":")
            host = host.strip("[]")
            try:
                with (
                    socket.create_connection((host, int(port)), timeout=timeout) as raw,
                    ctx.wrap_socket(raw, server_hostname=host),
                ):
                    return
            except ssl.SSLCertVerificationError as exc:
                problems.append(f"{server}: certificate rejected ({exc.verify_message})")
            except ssl.SSLError as exc:
                problems.append(f"{server}: TLS error ({exc.reason or type(exc).__name__})")
            except TimeoutError:
                problems.append(f"{server}: no TLS answer within {timeout:g} s (not a TLS port?)")
            except OSError as exc:
                problems.append(f"{server}: {exc.strerror or type(exc).__name__}")
        raise SinkUnavailableError(f"TLS handshake failed: {'; '.join(problems)}")

    def _diagnose(self, timeout: float) -> str:
        """Why bootstrapping failed, as far as a plain TCP connect can tell."""
        cfg = self.config
        refused = []
        for server in cfg.bootstrap_servers:
            host, _, port = server.rpartition(":")
            try:
                with socket.create_connection(
                    (host.strip("[]"), int(port)), timeout=min(timeout, 2)
                ):
                    pass
            except OSError as exc:
                refused.append(f"{server}: {exc.strerror or type(exc).__name__}")
                continue
            checks = [f"security_protocol ({cfg.security_protocol})"]
            if cfg.security_protocol in SASL_PROTOCOLS:
                checks.append(f"sasl_mechanism ({cfg.sasl_mechanism}), sasl_username/password")
            if cfg.security_protocol in TLS_PROTOCOLS:
                checks.append("ssl_cafile, client certificate and hostname")
            return (
                f"{server} accepts TCP connections but the Kafka handshake did not complete"
                f" within {timeout:g} s; check {', '.join(checks)}"
            )
        return f"no bootstrap server accepts connections ({'; '.join(refused)})"

    def _send_blocking(self, batch: Sequence[Event]) -> list[SinkError | None]:
        from sinks.kafka.errors import map_kafka_error

        producer = self._ensure_producer()
        outcomes: list[SinkError | None] = [None] * len(batch)
        futures: list[tuple[int, Any]] = []
        stopped: SinkError | None = None
        for i, event in enumerate(batch):
            if stopped is not None:
                outcomes[i] = stopped
                continue
            try:
                record = encode(event, self._topic, self._key, self._mapper)
            except PermanentSinkError as exc:
                outcomes[i] = exc
                continue
            except ValueError as exc:  # a body that is not JSON: it never will be
                outcomes[i] = PermanentSinkError(f"cannot encode the event: {exc}")
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
            self._discard_producer()
        return outcomes

    def _health_blocking(self) -> SinkHealth:
        from sinks.kafka.errors import map_kafka_error

        try:
            producer = self._new_producer(min(self.config.request_timeout_ms, _HEALTH_TIMEOUT_MS))
        except SinkError as exc:
            return SinkHealth(False, str(exc))
        try:
            for topic in self._health_topics:
                try:
                    producer.partitions_for(topic)
                except Exception as exc:
                    return SinkHealth(False, f"topic {topic}: {map_kafka_error(exc)}")
        finally:
            _close_quietly(producer, _CLOSE_SECONDS)
        checked = f"metadata ok for {', '.join(self._health_topics)}" if self._health_topics else ""
        return SinkHealth(True, "; ".join(p for p in (checked, self._health_note) if p))


def _close_quietly(producer: Any, timeout: float) -> None:
    # close() flushes first and raises if records are still queued; they are
    # pending in the outbox anyway and will be sent again. When it raises, the sender
    # thread would live on (and might still deliver): stop it without waiting.
    try:
        producer.close(timeout=timeout)
    except Exception:
        with contextlib.suppress(Exception):
            producer._sender.force_close()
        with contextlib.suppress(Exception):
            producer.close(timeout=0)


def _quiet_library_logs() -> None:
    """Keep kafka-python at WARNING unless the operator configured its logger.

    At DEBUG it logs every record's key and value, and at INFO every connection
    step: bodies must never reach the logs, and the sink logs its own outcomes.
    """
    logger = logging.getLogger("kafka")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)
