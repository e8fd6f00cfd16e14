"""The one place where kafka-python's errors become the sink errors of ``sinks.base``.

What the dispatcher should do next decides the class:

- ``PermanentSinkError`` (dead letter, this event only): the record itself is
  refused — larger than the producer's ``max_request_size`` or the broker's
  ``message.max.bytes`` (kafka-python splits an oversized producer batch down to
  single records before it reports this, so the error is about one record),
  an invalid record or topic name.
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

import kafka.errors as ke

from sinks.base import PermanentSinkError, RetryableSinkError, SinkError, SinkUnavailableError

__all__ = ["map_kafka_error"]

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
