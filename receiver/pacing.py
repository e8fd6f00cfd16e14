"""Ingest first: while webhooks arrive, export gets a bounded share of the process.

The process is one interpreter: every event a dispatcher exports (reading it, encoding
it, handing it to a client) takes time the webhook path then does not have. A large
backlog drained flat out would halve what ingress answers, and the answer to BIGHUB is
what the service exists for; the backlog can wait. So the dispatchers of a process share
one pacer: while a webhook arrived in the last second, the time they spend on batches is
at most ``share`` of the wall clock (after a batch that took ``t``, the next one starts
``t * (1/share - 1)`` later at the earliest). Without webhooks they run flat out.

Steady state is not slowed: exporting an event costs a tenth of ingesting it, so a
quarter of the time exports far more than arrives. Only a backlog drains more slowly
while new events keep coming.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["DrainPacer"]

_ACTIVE_SECONDS = 1.0  # webhooks this recent count as "arriving"
_LONGEST_WAIT = 1.0  # never hold a dispatcher longer than this at a time


class DrainPacer:
    """Shared by the dispatchers of one process; ``ingested`` is called per webhook."""

    def __init__(self, share: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        self.share = share
        self.clock = clock
        self._last_ingest = float("-inf")
        self._free_at = 0.0

    def ingested(self) -> None:
        self._last_ingest = self.clock()

    @property
    def ingesting(self) -> bool:
        return self.clock() - self._last_ingest < _ACTIVE_SECONDS

    @property
    def limiting(self) -> bool:
        """Export is being held to its share now (webhooks are arriving)."""
        return self.share < 1 and self.ingesting

    def spent(self, seconds: float) -> None:
        """A dispatcher spent ``seconds`` on a batch."""
        if self.share < 1 and self.ingesting:
            now = self.clock()
            self._free_at = max(now, self._free_at) + seconds * (1 / self.share - 1)

    async def turn(self) -> None:
        """Wait until export may take its next batch."""
        while self.share < 1 and self.ingesting:
            wait = self._free_at - self.clock()
            if wait <= 0:
                return
            await asyncio.sleep(min(wait, _LONGEST_WAIT))
