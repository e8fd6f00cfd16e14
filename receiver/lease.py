"""Keeping a cursor lease alive while a dispatcher works.

The store grants a lease for ``lease_seconds``; the keeper renews it every third of
that. It counts the lease as lost — and the dispatcher must stop before writing
anything — when the store says another owner has it, or when no renewal succeeded
for 90 % of the lease (the store may have been unreachable: another dispatcher may
take over when the lease ends, so this one must have stopped by then).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from receiver.store import Lease, Store

__all__ = ["LeaseKeeper"]

log = structlog.get_logger(component="bighub_siem.dispatcher")

_SAFETY = 0.9  # stop using a lease after this share of it without a renewal


class LeaseKeeper:
    """Renews one lease in the background; ``lost`` is set once it cannot be trusted."""

    def __init__(self, store: Store, lease: Lease, lease_seconds: float, granted_at: float):
        self.store = store
        self.lease = lease
        self.lease_seconds = lease_seconds
        self.lost = asyncio.Event()
        self._valid_until = granted_at + lease_seconds * _SAFETY
        self._task = asyncio.create_task(self._run(), name=f"lease:{lease.sink}")

    @property
    def valid(self) -> bool:
        return not self.lost.is_set() and time.monotonic() < self._valid_until

    async def _run(self) -> None:
        interval = self.lease_seconds / 3
        while True:
            await asyncio.sleep(max(0.0, min(interval, self._valid_until - time.monotonic())))
            if time.monotonic() >= self._valid_until:
                log.error("lease_expired_unrenewed", sink=self.lease.sink)
                self.lost.set()
                return
            asked = time.monotonic()
            try:
                ours = await asyncio.wait_for(
                    self.store.renew(self.lease, lease_seconds=self.lease_seconds), interval
                )
            except Exception as exc:  # unreachable for now: try again until the lease runs out
                log.warning("lease_renew_failed", sink=self.lease.sink, error=type(exc).__name__)
                continue
            if not ours:
                log.warning("lease_taken_over", sink=self.lease.sink)
                self.lost.set()
                return
            self._valid_until = asked + self.lease_seconds * _SAFETY

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
