"""The Microsoft Sentinel sink (``type = "sentinel"``): the Azure Monitor Logs Ingestion API."""

from sinks.sentinel.config import SentinelConfig, Streams
from sinks.sentinel.sink import SentinelSink

__all__ = ["SentinelConfig", "SentinelSink", "Streams"]
