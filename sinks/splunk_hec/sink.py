"""The Splunk HEC sink: batches to ``/services/collector/event``, optional indexer ack.

The parts: ``encoder`` (events -> HEC event objects, pure), ``_client`` (httpx and
the map of HEC's answers), ``_delivery`` (one send: split, isolate, await acks),
``_ackstate`` (ackIds that survive a restart), ``health`` (what ``health()`` checks).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import ClassVar

import httpx
import structlog

from sinks.base import (
    Event,
    PermanentSinkError,
    RetryableSinkError,
    SinkConfig,
    SinkHealth,
)
from sinks.splunk_hec import health
from sinks.splunk_hec._ackstate import AckState, AckStateLockedError
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
        """Open the HTTP client and, with ``ack``, the ack state file. No network I/O.

        Raises:
            PermanentSinkError: the CA bundle or the ack state file is unusable.
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
        state: AckState | None = None
        if cfg.ack:
            state = AckState(cfg.state_path())
            try:
                warnings = await asyncio.to_thread(state.open)
            except (AckStateLockedError, OSError) as exc:
                await client.aclose()
                raise PermanentSinkError(f"ack state {cfg.state_path()}: {exc}") from exc
            for warning in warnings:
                log.warning("splunk_hec_ack_state", sink=self.name, warning=warning)
        self._delivery = Delivery(cfg, client, state, clock=self._clock)

    async def send(self, batch: Sequence[Event]) -> None:
        """Deliver ``batch`` (see ``_delivery``)."""
        if self._delivery is None:
            raise RetryableSinkError("sink is not started")
        await self._delivery.send(batch)

    async def health(self) -> SinkHealth:
        """HEC's health endpoint, then a token check that sends no event."""
        delivery = self._delivery
        if delivery is None:
            return SinkHealth(ok=False, detail="not started")
        ack = (lambda: delivery.query_acks([])) if delivery.state is not None else None
        return await health.check(delivery.client, delivery.channel, ack)

    async def close(self) -> None:
        delivery, self._delivery = self._delivery, None
        if delivery is not None:
            await delivery.client.aclose()
            if delivery.state is not None:
                delivery.state.close()
