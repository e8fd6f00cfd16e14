"""The S3 sink: the async face of the archive writer.

The parts: ``encoder`` (events -> objects and keys, pure), ``_client`` (boto3 and its
error map), ``_archive`` (exactly-once objects and the manifest chain), ``manifest``
(signed manifests), ``health`` (the check at start and in ``health()``), ``verify``
(the auditor's side).

boto3 blocks, so every S3 call runs on this sink's own small thread pool (two
workers: a long send never holds up a health check), and the event loop only
awaits. The writer and its chain state are used by one thread at a time.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar, TypeVar

import structlog

from sinks.base import (
    Event,
    PartialDeliveryError,
    SinkConfig,
    SinkError,
    SinkHealth,
    SinkUnavailableError,
)
from sinks.s3._archive import ArchiveWriter
from sinks.s3._client import S3Api, api_for
from sinks.s3.config import S3Config

__all__ = ["S3Sink"]

log = structlog.get_logger("bighub_siem.sinks.s3")
T = TypeVar("T")


class S3Sink:
    """Archives batches as gzip NDJSON objects with a signed manifest chain."""

    config_model: ClassVar[type[SinkConfig]] = S3Config

    def __init__(
        self,
        config: SinkConfig,
        *,
        clock: Callable[[], float] = time.time,
        api_factory: Callable[[S3Config], S3Api] = api_for,
    ) -> None:
        """Build without I/O.

        Args:
            config: an ``S3Config``.
            clock: wall clock (epoch seconds), injectable for tests.
            api_factory: builds the blocking S3 client; tests wrap it to count calls.
        """
        if not isinstance(config, S3Config):
            raise TypeError("S3Sink needs an S3Config")
        self.config = config
        self._clock = clock
        self._api_for = api_factory
        self._pool = ThreadPoolExecutor(2, thread_name_prefix=f"s3-{config.name}")
        self._lock = threading.Lock()
        self._writer: ArchiveWriter | None = None
        self._closed = False

    async def _off_loop(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args))

    def _locked(self, fn: Callable[..., T], *args: object) -> T:
        with self._lock:
            return fn(*args)

    def _open(self) -> ArchiveWriter:
        writer = ArchiveWriter(self._api_for(self.config), self.config, clock=self._clock)
        writer.open()
        return writer

    async def start(self) -> None:
        """Connect, check write access, recover the chain head from the bucket.

        Raises:
            SinkUnavailableError: unreachable, refused, or the newest manifest is invalid.
            PermanentSinkError: boto3 is not installed.
        """
        if self._writer is None:
            self._writer = await self._off_loop(self._locked, self._open)

    async def send(self, batch: Sequence[Event]) -> None:
        """Archive ``batch``; return once every object and its manifest are stored.

        Raises:
            SinkUnavailableError: S3 unreachable or refusing us (nothing charged).
            RetryableSinkError: a transient failure; objects already written are
                recognised on the retry, never written twice.
            PermanentSinkError: S3 says these objects can never be stored.
            PartialDeliveryError: some partitions failed (the others are archived), or
                partitions failed for different reasons.
        """
        if not batch:
            return
        writer = self._writer
        if writer is None:
            raise SinkUnavailableError("the s3 sink is not started")
        failures = await self._off_loop(self._locked, writer.write_batch, batch)
        if not failures:
            return
        kinds = {type(e) for e in failures.values()}
        if len(failures) == len(batch) and len(kinds) == 1:
            # One cause for all: raised as itself, so the delivery log names it (the
            # dispatcher reads both forms alike: an all-unavailable batch is never charged).
            raise next(iter(failures.values()))
        raise PartialDeliveryError(failures)

    async def health(self) -> SinkHealth:
        """HeadBucket plus a conditional PUT of the archive marker (write permission)."""
        try:
            await self._off_loop(self._probe)
        except SinkError as exc:
            return SinkHealth(ok=False, detail=str(exc))
        return SinkHealth(ok=True)

    def _probe(self) -> None:
        writer = self._writer
        if writer is None:  # not started (or start keeps failing): probe with a fresh client
            writer = ArchiveWriter(self._api_for(self.config), self.config, clock=self._clock)
        # No lock: the probe touches no chain state, so it may run beside a send.
        writer.probe()

    async def close(self) -> None:
        """Publish entries still pending (after a failed manifest write); safe twice."""
        if self._closed:
            return
        self._closed = True
        writer = self._writer
        if writer is not None:
            try:
                await self._off_loop(self._locked, writer.flush)
            except SinkError as exc:
                # Their events were not marked delivered: the next start re-chains them.
                log.warning("final_manifest_failed", sink=self.config.name, error=str(exc))
            writer.close()
        self._pool.shutdown(wait=False)
