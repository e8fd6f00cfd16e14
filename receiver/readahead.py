"""The next batch, read from the log while the current one is being sent.

A backlogged dispatcher alternates three waits: the store read, the sink's send and
the store write that moves the cursor. The read of batch N+1 does not depend on how
batch N ends, only on where it ends, so it can run while N is in flight (SQLite and
PostgreSQL reads run off the event loop). What was read ahead is used only if the
cursor then stands exactly where that read started, under the same lease, with no
failure charged to the head: anything else (a retry, a dead letter, a lost lease, a
re-queue) throws it away and the loop reads afresh. Order and exactly-once are the
cursor's business and do not change: batch N+1 is sent only after N is recorded.

Memory: at most one batch more per sink, so only sinks whose largest batch fits in
``MAX_BYTES`` (its bodies plus ``EVENT_BYTES`` per event for the ``Event`` object, about
600 bytes measured) read ahead: the defaults of stdout, Kafka, HEC and Sentinel do; the S3
archive and Security Lake (64 MiB batches, few and large sends) do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

import structlog

from receiver.store import Lease, LogBatch, Route, Store
from sinks import SinkConfig

log = structlog.get_logger(component="bighub_siem.dispatcher")

MAX_BYTES = 8 * 1024 * 1024  # a sink with larger batches does not read ahead
EVENT_BYTES = 1024  # memory of one Event beside its body (a generous estimate)


class ReadAhead:
    """At most one read in flight, keyed by the cursor position it starts from."""

    def __init__(self) -> None:
        self._task: asyncio.Task[LogBatch] | None = None
        self._from: Lease | None = None

    @property
    def pending(self) -> bool:
        return self._task is not None

    def begin(
        self,
        store: Store,
        route: Route,
        config: SinkConfig,
        lease: Lease,
        batch: LogBatch,
        now: float,
    ) -> None:
        """Read the batch after ``batch`` (about to be sent under ``lease``) if there is a
        backlog: the batch was cut by a limit and the head has no failures charged.

        The read is the loop's own, fill rule included: if what follows is a batch still
        filling, it loads no bodies and says so (``ready_at``, ``filling``), and the loop
        waits on it as on any read. So under steady traffic, where the next batch is
        rarely full yet, reading ahead costs a light scan and is never thrown away."""
        largest = config.batch_max_bytes + config.batch_max_events * EVENT_BYTES
        if not batch.more or lease.attempts or largest > MAX_BYTES:
            return
        after = dataclasses.replace(lease, position=batch.scanned_to)
        read = store.read(
            after,
            route,
            limit=config.batch_max_events,
            max_bytes=config.batch_max_bytes,
            fill_wait=config.batch_max_wait_seconds,
            now=now,
        )
        self.discard()
        self._task = asyncio.ensure_future(read)
        self._from = after

    async def take(self, lease: Lease) -> LogBatch | None:
        """The batch read ahead, if it follows on from ``lease`` as it is now; else None
        (and it is thrown away). Waits for a read still in flight."""
        task, start = self._task, self._from
        self._task = self._from = None
        if task is None or start is None:
            return None
        follows = (
            lease.position == start.position
            and lease.fence == start.fence
            and lease.owner == start.owner
            and lease.attempts == 0
        )
        if not follows:
            _cancel(task)
            return None
        try:
            return await task
        except asyncio.CancelledError:
            if task.cancelled():  # the read was cancelled, not this loop
                return None
            raise
        except Exception as exc:  # the loop reads again and meets the error itself
            log.debug("read_ahead_failed", error=type(exc).__name__)
            return None

    def discard(self) -> None:
        task, self._task, self._from = self._task, None, None
        if task is not None:
            _cancel(task)


def _cancel(task: asyncio.Task[LogBatch]) -> None:
    if task.done():
        with contextlib.suppress(BaseException):
            task.exception()  # retrieved: no "exception was never retrieved" noise
    else:
        task.cancel()
