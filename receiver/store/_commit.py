"""The group-commit engine both stores share: admission, queue, groups, answers.

An ingest call joins a queue; writer tasks take everything queued (up to a group's
limits) and commit it in one transaction through the backend's ``commit`` function,
so one fsync serves many requests. Around that, admission control keeps what a
stalled or slow store can make the process hold bounded:

- the calls in flight (queued or inside a commit) are bounded by count and by body
  bytes; a call that would exceed either is refused at once (``OverloadedError``),
  before it holds anything;
- each call has a deadline: still unanswered when it passes, the call gets
  ``OverloadedError`` at once (a sweeper checks every 50 ms). A call already inside a
  commit may still be stored; its sender retries and is answered "duplicate";
- a call whose client went away (``alive()`` false) is dropped when its group is
  formed, never committed: the sender retries and is deduplicated;
- a group the database refuses because of one event's data (``EventRefusedError``
  from ``commit``) is split in halves and committed again, so only that event fails.

The 503 these produce tells BIGHUB to retry; nothing acknowledged is ever dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from receiver.errors import EventRefusedError, OverloadedError, StoreError
from receiver.store.base import IngestResult, NewEvent

__all__ = ["Admission", "CommitFn", "GroupCommitter"]

CommitFn = Callable[[Sequence[NewEvent]], Awaitable[Sequence[IngestResult | StoreError]]]
"""Commit a group durably; one result (or a per-event error) per event, in order."""

GROUP_MAX = 2000  # events per group commit; bounds one transaction's latency
GROUP_MAX_BYTES = 32 * 1024**2  # body bytes per group
_SWEEP_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class Admission:
    """Bounds on ingest calls in flight (see ``StoreSettings``)."""

    max_events: int = 10_000
    max_bytes: int = 32 * 1024**2
    deadline_seconds: float = 10.0


@dataclass(eq=False, slots=True)
class _Call:
    event: NewEvent = field(repr=False)
    future: asyncio.Future[IngestResult]
    deadline: float
    alive: Callable[[], bool] | None
    size: int


class GroupCommitter:
    """Queues ingest calls and commits them in groups on ``writers`` tasks."""

    def __init__(
        self, commit: CommitFn, *, writers: int = 1, admission: Admission | None = None
    ) -> None:
        self._commit = commit
        self._writers_wanted = writers
        self.admission = admission or Admission()
        self._queue: deque[_Call] = deque()
        self._committing: list[list[_Call]] = []
        self._events = 0  # calls in flight: queued or inside a commit
        self._bytes = 0
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self.commits = 0

    @property
    def in_flight(self) -> tuple[int, int]:
        """(calls, body bytes) queued or being committed."""
        return self._events, self._bytes

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._write_loop(), name=f"group-commit-{n}")
            for n in range(self._writers_wanted)
        ]
        self._tasks.append(asyncio.create_task(self._sweep_loop(), name="group-commit-sweeper"))
        self._running = True
        for task in self._tasks:
            # Told when any task ends, so ``running`` is a flag read per ingest call
            # rather than a walk over the tasks.
            task.add_done_callback(self._task_ended)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._running = False
        closed = StoreError("store closed")
        for call in self._queue:
            _fail(call, closed)
        self._queue.clear()

    async def submit(
        self, event: NewEvent, alive: Callable[[], bool] | None = None
    ) -> IngestResult:
        """Wait for ``event``'s group to commit.

        Raises:
            OverloadedError: refused at the door, deadline passed, or client gone.
            StoreError: the commit failed, or the store is not open.
        """
        if not self.running:
            raise StoreError("store is not open")
        size = len(event.body)
        adm = self.admission
        if self._events + 1 > adm.max_events or self._bytes + size > adm.max_bytes:
            raise OverloadedError("the ingest queue is full")
        future: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        self._queue.append(
            _Call(event, future, time.monotonic() + adm.deadline_seconds, alive, size)
        )
        self._events += 1
        self._bytes += size
        self._wakeup.set()
        return await future

    def _done(self, calls: Sequence[_Call]) -> None:
        self._events -= len(calls)
        self._bytes -= sum(c.size for c in calls)

    def _take_group(self) -> list[_Call]:
        """The next group: live calls only, within the group limits."""
        group: list[_Call] = []
        dropped: list[_Call] = []
        size = 0
        while self._queue and len(group) < GROUP_MAX:
            call = self._queue[0]
            if call.future.done():  # answered by the sweeper (deadline)
                dropped.append(self._queue.popleft())
                continue
            if call.alive is not None and not call.alive():
                _fail(call, OverloadedError("the client went away before its commit"))
                dropped.append(self._queue.popleft())
                continue
            if group and size + call.size > GROUP_MAX_BYTES:
                break
            size += call.size
            group.append(self._queue.popleft())
        self._done(dropped)
        return group

    async def _write_loop(self) -> None:
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            group = self._take_group()
            if not group:
                continue
            self._committing.append(group)
            try:
                results = await self._split_commit([c.event for c in group])
            except asyncio.CancelledError:  # closing: nobody may wait for this group forever
                for call in group:
                    _fail(call, StoreError("store closed during the commit"))
                raise
            except Exception as exc:  # the group fails (503), the writer lives on
                error = exc if isinstance(exc, StoreError) else StoreError(repr(exc)[:300])
                for call in group:
                    _fail(call, error)
            else:
                self.commits += 1
                for call, result in zip(group, results, strict=True):
                    if call.future.done():
                        continue
                    if isinstance(result, StoreError):
                        call.future.set_exception(result)
                    else:
                        call.future.set_result(result)
            finally:
                self._committing.remove(group)
                self._done(group)

    async def _split_commit(
        self, events: Sequence[NewEvent]
    ) -> Sequence[IngestResult | StoreError]:
        try:
            return await self._commit(events)
        except EventRefusedError as exc:
            if len(events) == 1:
                return [exc]
        half = len(events) // 2
        return [*await self._split_commit(events[:half]), *await self._split_commit(events[half:])]

    async def _sweep_loop(self) -> None:
        # One timer for everyone instead of one per request.
        while True:
            await asyncio.sleep(_SWEEP_SECONDS)
            now = time.monotonic()
            late = OverloadedError("the store did not commit in time")
            while self._queue and (self._queue[0].deadline <= now or self._queue[0].future.done()):
                call = self._queue.popleft()
                _fail(call, late)
                self._done([call])
            for group in self._committing:
                # Answered now; the bodies stay counted until the commit returns.
                if group[0].deadline <= now:
                    for call in group:
                        _fail(call, late)


def _fail(call: _Call, error: StoreError) -> None:
    if not call.future.done():
        call.future.set_exception(error)
