"""The Microsoft Sentinel sink: the async face of the blocking Azure clients.

The Azure SDK's sync client runs on this sink's own two threads (a long send never
holds up a health check), and a third encodes the next call of a batch while one is in
flight (``_delivery``); the event loop only awaits. When the service asks us to wait
(429 / 503 with ``Retry-After``), the sink holds: sends before that time fail at once,
uncharged, without touching the network.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar, TypeVar

from sinks.base import (
    Event,
    PartialDeliveryError,
    SinkConfig,
    SinkError,
    SinkHealth,
    SinkUnavailableError,
)
from sinks.sentinel._client import IngestionApi
from sinks.sentinel._delivery import Delivery
from sinks.sentinel.config import SentinelConfig
from sinks.sentinel.health import check

__all__ = ["SentinelSink"]

T = TypeVar("T")


class SentinelSink:
    """Posts events as rows to a data collection rule's streams."""

    config_model: ClassVar[type[SinkConfig]] = SentinelConfig

    def __init__(
        self, config: SinkConfig, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        if not isinstance(config, SentinelConfig):
            raise TypeError("SentinelSink needs a SentinelConfig")
        self.config = config
        self._monotonic = monotonic
        self._pool = ThreadPoolExecutor(2, thread_name_prefix=f"sentinel-{config.name}")
        self._encoder = ThreadPoolExecutor(1, thread_name_prefix=f"sentinel-{config.name}-rows")
        self._api: IngestionApi | None = None
        self._hold_until = 0.0
        self._closed = False

    async def _off_loop(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args))

    async def start(self) -> None:
        """Build the clients (no network: the first token is fetched by the first call).

        Raises:
            PermanentSinkError: the Azure SDK is not installed.
        """
        if self._api is None:
            self._api = await self._off_loop(IngestionApi, self.config)

    async def send(self, batch: Sequence[Event]) -> None:
        """Post ``batch``; return once the service acknowledged every row (204).

        Raises:
            SinkUnavailableError: credential or role problem, throttled, endpoint down;
                nothing charged (``retry_after`` set when the service named a wait).
            RetryableSinkError: a transient failure.
            PermanentSinkError: every event of the batch was refused on its own merits.
            PartialDeliveryError: some events were delivered, the listed ones were not.
        """
        if not batch:
            return
        api = self._api
        if api is None:
            raise SinkUnavailableError("the sentinel sink is not started")
        wait = self._hold_until - self._monotonic()
        if wait > 0:
            raise SinkUnavailableError(
                f"holding: the service asked to wait {wait:.1f}s more", retry_after=wait
            )
        failures = await self._off_loop(Delivery(api, self.config, batch, self._encoder).run)
        if not failures:
            return
        for error in failures.values():
            if isinstance(error, SinkUnavailableError) and error.retry_after:
                self._hold_until = self._monotonic() + error.retry_after
                break
        causes = {id(e) for e in failures.values()}
        if len(failures) == len(batch) and len(causes) == 1:
            # One cause for all (an outage, a 429): raised as itself, so the delivery log
            # names it (the dispatcher reads both forms alike).
            raise next(iter(failures.values()))
        raise PartialDeliveryError(failures)

    async def health(self) -> SinkHealth:
        """A token, then an empty call per stream (role assignment, DCR, stream)."""
        api = self._api
        fresh = api is None
        try:
            if api is None:  # not started (or start keeps failing): probe with fresh clients
                api = await self._off_loop(IngestionApi, self.config)
        except SinkError as exc:
            return SinkHealth(ok=False, detail=str(exc))
        streams = self.config.streams.model_dump().values()
        try:
            return await self._off_loop(check, api, streams, self.config.gzip_level)
        finally:
            if fresh:
                await self._off_loop(api.close)

    async def close(self) -> None:
        """Release the clients and threads; safe twice."""
        if self._closed:
            return
        self._closed = True
        api, self._api = self._api, None
        if api is not None:
            await self._off_loop(api.close)
        self._pool.shutdown(wait=False)
        self._encoder.shutdown(wait=False)
