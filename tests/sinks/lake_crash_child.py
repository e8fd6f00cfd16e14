"""Child process of the Security Lake crash test (``python -m tests.sinks.lake_crash_child``).

Runs the real dispatcher over a spool with the real Security Lake sink, wrapped so that
the process dies by SIGKILL right after the first ``send`` returned: the objects and
their manifest are in the bucket, the dispatcher never recorded the outcome. That is
the crash between the PUT and the commit, made at the Sink protocol (our own seam),
whatever the store does underneath.
Args: the spool path; the sink's settings as JSON in ``LAKE_CRASH_CONFIG``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from receiver.dispatcher import Dispatcher
from receiver.metrics import Metrics
from receiver.store import SQLiteStore
from sinks import Event, SinkConfig, SinkHealth
from sinks.security_lake import SecurityLakeConfig, SecurityLakeSink


class KilledAfterSend:
    """The real sink; the process dies as soon as a send has been confirmed."""

    config_model: ClassVar[type[SinkConfig]] = SecurityLakeConfig

    def __init__(self, sink: SecurityLakeSink) -> None:
        self._sink = sink

    async def start(self) -> None:
        await self._sink.start()

    async def send(self, batch: Sequence[Event]) -> None:
        await self._sink.send(batch)
        print(json.dumps({"sent": len(batch)}), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    async def health(self) -> SinkHealth:
        return await self._sink.health()

    async def close(self) -> None:
        await self._sink.close()


async def main(spool: Path, config: dict[str, Any]) -> None:
    cfg = SecurityLakeConfig(**config)
    store = SQLiteStore(spool, exclusive=True)
    await store.open()
    sink = KilledAfterSend(SecurityLakeSink(cfg))
    dispatcher = Dispatcher(sink, cfg, store, Metrics(), poll_seconds=0.05)
    dispatcher.start()
    await asyncio.sleep(60)  # SIGKILL comes long before
    raise SystemExit("the batch was never sent")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), json.loads(os.environ["LAKE_CRASH_CONFIG"])))
