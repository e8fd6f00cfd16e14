"""The stdout sink: one export record (or, with ``encoding = "ocsf"``, one OCSF record)
per line on standard output.

stdout belongs to this sink alone; logs go to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Sequence
from typing import BinaryIO, ClassVar, Literal

from pydantic import Field

from sinks.base import Event, RetryableSinkError, SinkConfig, SinkHealth
from sinks.ocsf import OcsfOptions, mapper_for

__all__ = ["StdoutConfig", "StdoutSink"]


class StdoutConfig(SinkConfig, OcsfOptions):
    """``type = "stdout"``: JSON lines on standard output."""

    type: Literal["stdout"] = Field(default="stdout", description="JSON lines on stdout.")
    batch_max_wait_seconds: float = Field(
        # Short: a line appears within 0.1 s, yet a busy receiver writes and marks
        # hundreds of events per cycle instead of one.
        default=0.1,
        ge=0,
        le=3600,
        description="Longest an event waits for its batch to fill.",
    )


class StdoutSink:
    """Writes each event's export record as a line and flushes before confirming."""

    config_model: ClassVar[type[SinkConfig]] = StdoutConfig

    def __init__(self, config: SinkConfig, stream: BinaryIO | None = None) -> None:
        self.config = config
        self._stream = stream
        self._mapper = mapper_for(config) if isinstance(config, OcsfOptions) else None

    def _out(self) -> BinaryIO:
        return self._stream if self._stream is not None else sys.stdout.buffer

    async def start(self) -> None:
        return None

    async def send(self, batch: Sequence[Event]) -> None:
        mapper = self._mapper
        if mapper is None:
            data = b"".join(event.export_json() + b"\n" for event in batch)
        else:
            data = b"".join(mapper.map(event).json() + b"\n" for event in batch)
        try:
            # A full pipe blocks; keep the event loop free.
            await asyncio.to_thread(self._write, data)
        except (OSError, ValueError) as exc:  # broken pipe or closed stream
            raise RetryableSinkError(f"stdout write failed: {type(exc).__name__}") from exc

    def _write(self, data: bytes) -> None:
        out = self._out()
        out.write(data)
        out.flush()

    async def health(self) -> SinkHealth:
        return SinkHealth(
            ok=not self._out().closed, detail="" if not self._out().closed else "closed"
        )

    async def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._out().flush()
