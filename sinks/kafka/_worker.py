"""One dedicated thread for a blocking client, with a bounded hand-off and a time limit.

At most one call runs, and none waits behind it: a caller that finds the previous
call still running (it overran its limit) waits for it within its own limit, then
gives up without queueing. The thread is a daemon, so a client call that never
returns (kafka-python's TLS handshake has no timeout of its own) cannot hold the
process open at exit, as a ``ThreadPoolExecutor`` worker would.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["Worker", "WorkerTimeout"]

T = TypeVar("T")


class WorkerTimeout(Exception):
    """The call did not finish within its limit (it may still be running)."""


class Worker:
    """Runs blocking calls one at a time on a single daemon thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.Queue[tuple[Callable[[], Any], Future[Any]] | None] = queue.Queue(1)
        self._thread: threading.Thread | None = None
        self._busy: Future[Any] | None = None
        self._gate = asyncio.Lock()

    @staticmethod
    def _loop(jobs: queue.Queue[tuple[Callable[[], Any], Future[Any]] | None]) -> None:
        while True:
            job = jobs.get()
            if job is None:
                return
            fn, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the waiting coroutine
                future.set_exception(exc)

    async def run(self, fn: Callable[[], T], limit: float) -> T:
        """Run ``fn`` on the thread and wait at most ``limit`` seconds for it.

        Raises:
            WorkerTimeout: ``fn`` (or the overrunning call before it) is still running.
            Exception: whatever ``fn`` raised.
        """
        async with self._gate:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + limit
            if self._busy is not None and not self._busy.done():
                await self._wait(self._busy, deadline - loop.time())
            if self._thread is None:
                self._jobs = queue.Queue(1)
                self._thread = threading.Thread(
                    target=self._loop, args=(self._jobs,), name=self.name, daemon=True
                )
                self._thread.start()
            future: Future[T] = Future()
            self._busy = future
            self._jobs.put_nowait((fn, future))  # empty: the previous call has finished
            await self._wait(future, deadline - loop.time())
            return future.result()

    @staticmethod
    async def _wait(future: Future[Any], timeout: float) -> None:
        done = asyncio.wrap_future(future)
        # Whatever the call ends with is read from ``future``; mark it retrieved here so a
        # call that finishes after we stopped waiting is not reported as unhandled.
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            # shield: giving up waiting must not cancel the call itself.
            await asyncio.wait_for(asyncio.shield(done), max(0.0, timeout))
        except asyncio.TimeoutError:
            raise WorkerTimeout(f"the call has not returned within {timeout:.1f} s") from None
        except Exception:
            return  # the caller reads the outcome from the future

    def stop(self) -> None:
        """Let the thread end after its current call (never waits for it)."""
        if self._thread is not None:
            # Full: a call is still waiting; the daemon thread cannot hold the process open.
            with contextlib.suppress(queue.Full):
                self._jobs.put_nowait(None)
            self._thread = None
