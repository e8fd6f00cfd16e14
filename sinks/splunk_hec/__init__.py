"""Splunk HTTP Event Collector sink (``type = "splunk_hec"``)."""

from sinks.splunk_hec.config import EventMeta, SplunkHecConfig
from sinks.splunk_hec.encoder import Encoder
from sinks.splunk_hec.sink import SplunkHecSink

__all__ = ["Encoder", "EventMeta", "SplunkHecConfig", "SplunkHecSink"]
