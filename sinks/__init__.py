"""Sinks: where stored BIGHUB events are exported. Never imports ``receiver``."""

from sinks._registry import (
    ENTRY_POINT_GROUP,
    UnknownSinkTypeError,
    build_sink,
    sink_type,
    sink_types,
)
from sinks.base import (
    SCHEMA_VERSION,
    Event,
    PartialDeliveryError,
    PermanentSinkError,
    RetryableSinkError,
    Sink,
    SinkConfig,
    SinkError,
    SinkHealth,
    SinkUnavailableError,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "SCHEMA_VERSION",
    "Event",
    "PartialDeliveryError",
    "PermanentSinkError",
    "RetryableSinkError",
    "Sink",
    "SinkConfig",
    "SinkError",
    "SinkHealth",
    "SinkUnavailableError",
    "UnknownSinkTypeError",
    "build_sink",
    "sink_type",
    "sink_types",
]
