"""The Amazon Security Lake sink: OCSF Parquet objects per custom source, exactly once.

The parts: ``config`` (settings, checked without I/O), ``_arrow`` (one declared Arrow
schema per class and version), ``encoder`` (events -> Parquet objects and keys, and
back), ``_client`` (STS AssumeRole with the external id, renewed in time). The S3
archive's writer does the rest, unchanged: content-derived keys, conditional PUTs,
recognition of objects an earlier attempt wrote, and a signed manifest chain per
source prefix (``bighub-siem verify-archive --prefix ext/<source>`` checks it).

boto3 and pyarrow block, so all work runs on this sink's own two threads.
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
    PermanentSinkError,
    SinkConfig,
    SinkError,
    SinkHealth,
    SinkUnavailableError,
)
from sinks.ocsf import CloudContext, Mapper, class_of
from sinks.ocsf._schema import API_ACTIVITY, BASE_EVENT, ENTITY_MANAGEMENT
from sinks.s3 import health as s3_health
from sinks.s3._archive import ArchiveWriter
from sinks.s3._client import object_params
from sinks.security_lake._client import LakeClient
from sinks.security_lake.config import SecurityLakeConfig, SourceArchive

__all__ = ["SecurityLakeSink"]

log = structlog.get_logger("bighub_siem.sinks.security_lake")
T = TypeVar("T")
_CLASS_NAMES = (API_ACTIVITY.name, ENTITY_MANAGEMENT.name, BASE_EVENT.name)


class SecurityLakeSink:
    """Writes each OCSF class to its Security Lake custom source."""

    config_model: ClassVar[type[SinkConfig]] = SecurityLakeConfig

    def __init__(self, config: SinkConfig, *, clock: Callable[[], float] = time.time) -> None:
        if not isinstance(config, SecurityLakeConfig):
            raise TypeError("SecurityLakeSink needs a SecurityLakeConfig")
        self.config = config
        self._clock = clock
        # One client per provider role (Security Lake creates one role per source).
        self._clients = {
            role: LakeClient(config, role, clock=clock)
            for role in {config.role_for(name) for name in _CLASS_NAMES}
        }
        self._pool = ThreadPoolExecutor(2, thread_name_prefix=f"lake-{config.name}")
        self._lock = threading.Lock()
        self._writers: dict[str, ArchiveWriter] | None = None
        self._closed = False

    async def _off_loop(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args))

    def _locked(self, fn: Callable[..., T], *args: object) -> T:
        with self._lock:
            return fn(*args)

    # -- writers -----------------------------------------------------------------------

    def _build(self) -> dict[str, ArchiveWriter]:
        """One writer (one chain) per configured source; no I/O beyond the role."""
        from sinks.security_lake.encoder import ParquetFormat  # pyarrow: only when used

        cfg = self.config
        mapper = Mapper(cfg.ocsf, cfg.ocsf_version, cloud=CloudContext(cfg.region, cfg.account_id))
        writers: dict[str, ArchiveWriter] = {}
        for event_class in (API_ACTIVITY, ENTITY_MANAGEMENT, BASE_EVENT):
            source = cfg.sources.for_class(event_class.name)
            if source is None:
                continue
            settings = SourceArchive(
                prefix=cfg.source_prefix(source),
                signing_key=cfg.private_key(),
                multipart_threshold_bytes=cfg.multipart_threshold_bytes,
                multipart_part_bytes=cfg.multipart_part_bytes,
            )
            fmt = ParquetFormat(
                mapper,
                event_class,
                region=cfg.region,
                account=cfg.account_id,
                compression_level=cfg.compression_level,
            )
            api = self._clients[cfg.role_for(event_class.name)].api()
            writers[event_class.name] = ArchiveWriter(
                api, settings, clock=self._clock, object_format=fmt
            )
        return writers

    def _open(self) -> dict[str, ArchiveWriter]:
        writers = self._build()
        for writer in writers.values():
            writer.open()
        return writers

    def _fresh_api(self, writers: dict[str, ArchiveWriter]) -> None:
        for name, writer in writers.items():
            # Renews the role's credentials when they near expiry.
            writer.api = self._clients[self.config.role_for(name)].api()

    # -- the sink protocol -------------------------------------------------------------

    async def start(self) -> None:
        """Assume the role, check each source's prefix, recover each chain head.

        Raises:
            SinkUnavailableError: STS or S3 unreachable or refusing, or a chain's newest
                manifest is invalid.
            PermanentSinkError: pyarrow or boto3 is not installed.
        """
        if self._writers is None:
            try:
                self._writers = await self._off_loop(self._locked, self._open)
            except ImportError as exc:
                raise PermanentSinkError(f"security_lake: {exc}") from exc

    async def send(self, batch: Sequence[Event]) -> None:
        """Write ``batch``: per class, one Parquet object per event day, then a manifest.

        Raises:
            SinkUnavailableError: STS / S3 unreachable or refusing (nothing charged).
            RetryableSinkError: transient; objects already written are recognised on the
                retry and never written twice.
            PermanentSinkError: events of a class that has no source configured.
            PartialDeliveryError: some classes or days failed, the others are stored.
        """
        if not batch:
            return
        writers = self._writers
        if writers is None:
            raise SinkUnavailableError("the security_lake sink is not started")
        failures = await self._off_loop(self._locked, self._write, writers, batch)
        if not failures:
            return
        kinds = {type(e) for e in failures.values()}
        if len(failures) == len(batch) and len(kinds) == 1:
            raise next(iter(failures.values()))
        raise PartialDeliveryError(failures)

    def _write(
        self, writers: dict[str, ArchiveWriter], batch: Sequence[Event]
    ) -> dict[int, SinkError]:
        by_class: dict[str, list[int]] = {}
        for position, event in enumerate(batch):
            by_class.setdefault(class_of(event.category).name, []).append(position)
        failures: dict[int, SinkError] = {}
        try:
            self._fresh_api(writers)
        except SinkError as exc:
            return dict.fromkeys(range(len(batch)), exc)
        for class_name, positions in by_class.items():
            writer = writers.get(class_name)
            if writer is None:
                missing = PermanentSinkError(
                    f"no Security Lake source for OCSF class {class_name}: set "
                    f"sources.{class_name}, then retry the dead letters"
                )
                failures.update(dict.fromkeys(positions, missing))
                continue
            try:
                failed = writer.write_batch([batch[p] for p in positions])
            except SinkError as exc:  # its manifest was not published: retry them all
                failures.update(dict.fromkeys(positions, exc))
                continue
            failures.update((positions[i], exc) for i, exc in failed.items())
        return failures

    async def health(self) -> SinkHealth:
        """The role can be assumed, and each source's prefix takes a conditional PUT."""
        try:
            await self._off_loop(self._probe)
        except SinkError as exc:
            return SinkHealth(ok=False, detail=str(exc))
        return SinkHealth(ok=True)

    def _probe(self) -> None:
        # No lock: probing touches no chain state. Fresh writers when not started.
        writers = self._writers if self._writers is not None else self._build()
        for name, writer in writers.items():
            api = self._clients[self.config.role_for(name)].api()
            marker = object_params(writer.config, kind="marker", now=self._clock())
            s3_health.check(api, writer.config, marker)

    async def close(self) -> None:
        """Publish manifests still pending; safe twice."""
        if self._closed:
            return
        self._closed = True
        for name, writer in (self._writers or {}).items():
            try:
                await self._off_loop(self._locked, writer.flush)
            except SinkError as exc:
                # Their events were not confirmed: the next start re-chains them.
                log.warning(
                    "final_manifest_failed", sink=self.config.name, source=name, error=str(exc)
                )
        self._pool.shutdown(wait=False)
