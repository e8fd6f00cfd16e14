"""The Splunk HEC sink: batches to ``/services/collector/event``, optional indexer ack.

The parts: ``encoder`` (events -> HEC event objects, pure), ``_client`` (httpx and
the map of HEC's answers), ``_delivery`` (one send: split, isolate, await acks),
``_ackstate`` (ackIds that survive a restart), ``health`` (what ``health()`` checks).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import ClassVar

import httpx
import structlog

from sinks.base import (
    Event,
    RetryableSinkError,
    SinkConfig,
    SinkHealth,
)
from sinks.splunk_hec import health
from sinks.splunk_hec._client import HecClient
from sinks.splunk_hec._delivery import Delivery
from sinks.splunk_hec.config import SplunkHecConfig

__all__ = ["SplunkHecSink"]

log = structlog.get_logger("bighub_siem.sinks.splunk_hec")


class SplunkHecSink:
    """Sends export records to Splunk's HTTP Event Collector.

    Args:
        config: a ``SplunkHecConfig``.
        clock: wall clock (epoch seconds), injectable for tests.
        transport: an httpx transport to use instead of the network (tests).
    """

    config_model: ClassVar[type[SinkConfig]] = SplunkHecConfig

    def __init__(
        self,
        config: SinkConfig,
        *,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not isinstance(config, SplunkHecConfig):
            raise TypeError("SplunkHecSink needs a SplunkHecConfig")
        self.config = config
        self.name = config.name
        self._clock = clock
        self._transport = transport
        self._delivery: Delivery | None = None

    async def start(self) -> None:
        """Open the HTTP client. No network I/O; the ack state opens at the first send.

        Raises:
            PermanentSinkError: the CA bundle is unusable.
        """
        if self._delivery is not None:
            return
        cfg = self.config
        client = HecClient(cfg, self._transport)
        if cfg.url.startswith("http://"):
            log.warning(
                "splunk_hec_plaintext",
                sink=self.name,
                detail="url is http://: the token and events cross the network unencrypted",
            )
        self._delivery = Delivery(cfg, client, clock=self._clock)

    async def send(self, batch: Sequence[Event]) -> None:
        """Deliver ``batch`` (see ``_delivery``)."""
        if self._delivery is None:
            raise RetryableSinkError("sink is not started")
        await self._delivery.send(batch)

    async def health(self) -> SinkHealth:
        """HEC's health endpoint, the token, and with ack the pending ackIds (``health``)."""
        delivery = self._delivery
        if delivery is None:
            return SinkHealth(ok=False, detail="not started")
        return await health.check(delivery)

    async def close(self) -> None:
        delivery, self._delivery = self._delivery, None
        if delivery is not None:
            await delivery.client.aclose()
            delivery.close_state()
