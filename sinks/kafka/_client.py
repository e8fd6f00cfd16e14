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
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import kafka.errors as ke
import structlog

from sinks.base import (
    PermanentSinkError,
    RetryableSinkError,
    SinkError,
    SinkUnavailableError,
)
from sinks.kafka._library_log import LIBRARY_LOG, route_library_logs
from sinks.kafka._preflight import diagnose, ssl_context, tls_check
from sinks.kafka.config import INSTALL_HINT, SASL_PROTOCOLS, TLS_PROTOCOLS, KafkaConfig
from sinks.kafka.encoder import KafkaRecord

__all__ = [
    "CLOSE_SECONDS",
    "ProducerClient",
    "TopicState",
    "close_quietly",
    "map_kafka_error",
]

log = structlog.get_logger("bighub_siem.sink.kafka")

CLOSE_SECONDS = 5.0
# The first bootstrap attempt is short: a broker that refuses our login answers within
# a fraction of a second, but kafka-python keeps retrying until its bootstrap timeout.
_QUICK_BOOTSTRAP_MS = 2500
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

# What a broker answers for a whole producer batch when one record in it is refused:
# the other records of that batch did nothing wrong, so they are sent again in
# smaller groups before anything is dead-lettered.
_BATCH_REFUSALS: tuple[type[BaseException], ...] = (
    ke.MessageSizeTooLargeError,
    ke.RecordListTooLargeError,
    ke.InvalidRecordError,
    ke.InvalidTimestampError,
)
_LOGIN_ERRORS: tuple[type[BaseException], ...] = (
    ke.SaslAuthenticationFailedError,
    ke.UnsupportedSaslMechanismError,
    ke.IllegalSaslStateError,
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


def _raised_in_sasl(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        parts = PurePath(tb.tb_frame.f_code.co_filename).parts
        if "kafka" in parts and "sasl" in parts:
            return True
        tb = tb.tb_next
    return False


def login_failure(seen: Sequence[BaseException], mechanism: str | None) -> str | None:
    """The reason a broker refused our SASL login, from what the library logged."""
    for exc in reversed(seen):
        if isinstance(exc, _LOGIN_ERRORS):
            return f"SASL authentication failed ({mechanism}): {exc}; check sasl_username / sasl_password"
        if _raised_in_sasl(exc):
            # e.g. a SCRAM server-final message carrying an error instead of a proof
            return (
                f"SASL authentication failed ({mechanism}): the broker ended the exchange"
                f" without accepting the credentials ({type(exc).__name__}); check"
                " sasl_username / sasl_password"
            )
    return None


@dataclass(frozen=True, slots=True)
class TopicState:
    """What the brokers' metadata says of one topic."""

    topic: str
    exists: bool
    problem: str = ""  # set when the brokers refused or failed to describe it


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
    admin clients for health checks. Thread-safe: ``close`` may come from another thread.

    Args:
        config: the sink's settings.
        factory: builds the producer from kafka-python keyword settings;
            ``kafka.KafkaProducer`` when None (tests pass a stand-in).
        admin_factory: builds the admin client the health check describes topics with;
            ``kafka.KafkaAdminClient`` when None.
    """

    def __init__(
        self,
        config: KafkaConfig,
        factory: Callable[[dict[str, Any]], Any] | None = None,
        admin_factory: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self.config = config
        self._factory = factory
        self._admin_factory = admin_factory
        self._lock = threading.Lock()  # guards _producer / _closed across threads
        self._producer: Any = None
        self._closed = False

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
            SinkUnavailableError: kafka-python missing, TLS, login or bootstrap failed.
        """
        timeout_ms = timeout_ms or self.config.request_timeout_ms
        try:
            from kafka import KafkaProducer
        except ImportError as exc:
            raise SinkUnavailableError(f"kafka-python 3 is not installed ({INSTALL_HINT})") from exc
        if self._factory is not None:
            return self._bootstrap(self._factory, self.settings(timeout_ms), timeout_ms)
        return self._bootstrap(KafkaProducer, self.settings(timeout_ms), timeout_ms, track=True)

    def _admin(self, timeout_ms: int) -> Any:
        from kafka import KafkaAdminClient

        settings = self.settings(timeout_ms)
        admin = {k: settings[k] for k in _ADMIN_KEYS if k in settings}
        if self._admin_factory is not None:
            return self._bootstrap(self._admin_factory, admin, timeout_ms)
        return self._bootstrap(KafkaAdminClient, admin, timeout_ms, track=True)

    def _bootstrap(
        self,
        build: Callable[..., Any],
        settings: dict[str, Any],
        timeout_ms: int,
        track: bool = False,
    ) -> Any:
        """Build a client (it bootstraps in its constructor) and say why when it cannot.

        A first, short attempt names a refused login within seconds; only when nothing
        was refused does a second attempt get the rest of the time.
        """
        if "ssl_context" in settings:
            tls_check(self.config, settings["ssl_context"], timeout_ms / 1000)
        quick = min(timeout_ms, _QUICK_BOOTSTRAP_MS)
        attempts = [quick] + ([timeout_ms - quick] if timeout_ms - quick >= 500 else [])
        route_library_logs()
        for n, budget in enumerate(attempts, start=1):
            with LIBRARY_LOG.watching() as seen:
                try:
                    return self._build(build, {**settings, "bootstrap_timeout_ms": budget}, track)
                except ke.KafkaTimeoutError as exc:
                    refused = login_failure(seen, self.config.sasl_mechanism)
                    if refused is not None:
                        raise SinkUnavailableError(refused) from exc
                    if n == len(attempts):
                        raise SinkUnavailableError(
                            diagnose(self.config, timeout_ms / 1000)
                        ) from exc
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    @staticmethod
    def _build(build: Callable[..., Any], settings: dict[str, Any], track: bool) -> Any:
        """``build(**settings)`` for a kafka-python class (``track``), else ``build(settings)``."""
        clients: list[Any] = []
        if track:
            from kafka.net.compat import KafkaNetClient

            # A client that fails to bootstrap leaves its network client (sockets,
            # selector) open; building it through the documented kafka_client hook
            # lets us close it, instead of leaking one per attempt.
            def tracked_client(**configs: Any) -> Any:
                client = KafkaNetClient(**configs)
                clients.append(client)
                return client

            settings["kafka_client"] = tracked_client
        try:
            return build(**settings) if track else build(settings)
        except Exception as exc:
            for client in clients:
                with contextlib.suppress(Exception):
                    client.close()
            if isinstance(exc, ke.KafkaTimeoutError):  # the constructor timed out bootstrapping
                raise
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

        A broker refuses a whole producer batch when one record in it is too large
        (``message.max.bytes``) or invalid; the records it refused together are sent
        again in halves, each half flushed alone, until only the refused records are
        left: they alone are permanent failures.
        """
        producer = self.producer()
        outcomes: list[SinkError | None] = [None] * len(records)
        todo = []
        for i, record in enumerate(records):
            if isinstance(record, SinkError):
                outcomes[i] = record
            else:
                todo.append(i)
        refused = self._send_and_wait(producer, records, todo, outcomes)
        groups = deque([refused] if len(refused) > 1 else [])
        while groups and not self._transient(outcomes):
            group = groups.popleft()
            log.info("kafka_batch_refused_resending", sink=self.config.name, records=len(group))
            half = len(group) // 2
            for part in (group[:half], group[half:]):
                again = self._send_and_wait(producer, records, part, outcomes)
                if len(again) > 1:
                    groups.append(again)
        if self._transient(outcomes):
            self.discard()
        return outcomes

    @staticmethod
    def _transient(outcomes: Sequence[SinkError | None]) -> bool:
        return any(e is not None and not isinstance(e, PermanentSinkError) for e in outcomes)

    def _send_and_wait(
        self,
        producer: Any,
        records: Sequence[KafkaRecord | SinkError],
        positions: Sequence[int],
        outcomes: list[SinkError | None],
    ) -> list[int]:
        """Send ``positions``, flush, write each outcome; return the positions the
        broker refused as part of a refused batch (``_BATCH_REFUSALS``)."""
        futures: list[tuple[int, Any]] = []
        stopped: SinkError | None = None
        for i in positions:
            record = records[i]
            if isinstance(record, SinkError):
                continue
            if stopped is not None:
                outcomes[i] = stopped
                continue
            try:
                future = producer.send(
                    record.topic, value=record.value, key=record.key, headers=record.headers
                )
            except Exception as exc:
                # Raised here, the error is about this record alone (say, larger than
                # max_request_size): no neighbour shares it.
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
        refused: list[int] = []
        for i, future in futures:
            error: BaseException | None = None
            if future.is_done:  # after flush, nearly always: no per-record wait
                error = future.exception
            else:
                try:
                    future.get(timeout=max(0.0, deadline - time.monotonic()))
                except Exception as exc:
                    error = exc
            outcomes[i] = None if error is None else map_kafka_error(error)
            if isinstance(error, _BATCH_REFUSALS):
                refused.append(i)
        return refused

    # -- metadata ---------------------------------------------------------------------------

    def describe(self, topics: Sequence[str], timeout_ms: int) -> list[TopicState]:
        """What the brokers' metadata says of ``topics``, with a fresh admin client.

        One metadata request that never creates a topic (a producer's would, where
        brokers auto-create topics).

        Raises:
            SinkUnavailableError: cannot connect (TLS, login, bootstrap), or the
                request failed.
        """
        admin = self._admin(timeout_ms)
        try:
            described = admin.describe_topics(list(topics)) if topics else []
        except Exception as exc:
            raise map_kafka_error(exc) from exc
        finally:
            with contextlib.suppress(Exception):
                admin.close()
        states = []
        for item in described:
            error = ke.for_code(int(item.get("error_code", 0)))
            name = str(item.get("name"))
            if error is ke.NoError:
                states.append(TopicState(name, True))
            elif error is ke.UnknownTopicOrPartitionError:
                states.append(TopicState(name, False))
            else:
                states.append(TopicState(name, False, str(map_kafka_error(error()))))
        return states


# The settings a KafkaAdminClient takes from the producer's.
_ADMIN_KEYS = (
    *("bootstrap_servers", "client_id", "request_timeout_ms", "bootstrap_timeout_ms"),
    *("reconnect_backoff_max_ms", "security_protocol", "ssl_context", "sasl_mechanism"),
    *("sasl_plain_username", "sasl_plain_password"),
)
