"""Child process of the S3 crash test (run as ``python -m tests.sinks.s3_crash_child``).

Runs the real dispatcher and S3 sink over a spool and dies by SIGKILL at the first
cursor write: the first batch's objects and manifest are in the bucket, the cursor
has not moved, exactly the crash between PUT and commit.
Args: the spool path; the sink's settings as JSON in ``S3_CRASH_CONFIG``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from receiver.dispatcher import Dispatcher
from receiver.metrics import Metrics
from receiver.store import Lease, Progress, SQLiteStore
from sinks.s3 import S3Config, S3Sink


class CommitKills:
    """A store (the Store protocol is our seam) that dies instead of recording delivery."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def advance(self, lease: Lease, progress: Progress) -> Lease:
        # Every event is routed here, so seqs are contiguous: the batch's size.
        print(json.dumps({"claimed": progress.position[1] - lease.position[1]}), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")


async def main(spool: Path, config: dict[str, Any]) -> None:
    cfg = S3Config(**config)
    store = SQLiteStore(spool, exclusive=True)
    await store.open()
    dispatcher = Dispatcher(S3Sink(cfg), cfg, CommitKills(store), Metrics(), poll_seconds=0.05)  # type: ignore[arg-type]
    dispatcher.start()
    await asyncio.sleep(60)  # SIGKILL comes long before
    raise SystemExit("the batch was never committed")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), json.loads(os.environ["S3_CRASH_CONFIG"])))
