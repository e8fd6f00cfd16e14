"""One listener's open connections, which of them may be closed to make room, and the
count and log of everything the edge cuts off.

At the connection cap a new connection takes the place of the longest-idle one: first
connections already refused and only draining, then connections between requests (fresh
or keep-alive), then connections still sending their headers (a real sender's headers arrive in one packet; a slowloris client's do
not). Connections with a request being read or answered are never taken. Only when
none can be taken is the new connection refused with a 503, at once.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from typing import Protocol

from receiver.edge.limits import EdgeLimits
from receiver.log import request_line
from receiver.metrics import Metrics

__all__ = ["BUSY", "CLOSING", "IDLE", "READING", "REASONS", "Connection", "Edge"]

# The tiers, in the order their connections are taken at the cap; BUSY ones never are.
CLOSING, IDLE, READING, BUSY = 0, 1, 2, 3

# Every reason the edge counts (the label values of bighub_siem_edge_refused).
REASONS = (
    "bad_request",  # not parseable as HTTP/1.1: 400
    "header_too_large",  # request line + headers over max_header_bytes: 431
    "too_many_headers",  # over max_header_count: 431
    "header_timeout",  # headers not complete within header_timeout: 408
    "pipeline_overflow",  # more pipelined requests than the edge queues: closed
    "idle_timeout",  # no request within the keep-alive (or, when new, header) timeout
    "evicted",  # an idle or header-reading connection closed to make room at the cap
    "connection_limit",  # at the cap with nothing to take: 503 at once
)
# Connection-level events worth a warning; a summary at most every this many seconds.
_WARN = ("evicted", "connection_limit")
_WARN_EVERY = 10.0


class Connection(Protocol):
    """What the registry needs of a connection."""

    def evict(self) -> None:
        """Close at once: the registry gave this connection's place to a new one."""


class Edge:
    """Shared by every connection of one listener (``ingress`` or ``admin``)."""

    def __init__(
        self,
        name: str,
        limits: EdgeLimits,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.limits = limits
        self._clock = clock
        self._tier: dict[Connection, int] = {}
        # One insertion-ordered dict per tier that may be taken: first entry = waited longest.
        self._takeable: tuple[dict[Connection, None], ...] = ({}, {}, {})
        self._counters = {r: metrics.edge_refused.labels(name, r) for r in REASONS}
        metrics.connections_open.labels(name).set_function(lambda: len(self._tier))
        self._unwarned: collections.Counter[str] = collections.Counter()
        self._next_warning = 0.0
        self._warning_due: asyncio.TimerHandle | None = None

    @property
    def open(self) -> int:
        return len(self._tier)

    def admit(self, conn: Connection) -> bool:
        """Register a new connection; False when it must be refused (503)."""
        if len(self._tier) >= self.limits.max_connections:
            victim = next((next(iter(t)) for t in self._takeable if t), None)
            if victim is None:
                self.shed("connection_limit")
                return False
            draining = self._tier[victim] == CLOSING
            self.forget(victim)
            victim.evict()
            if not draining:  # a refused connection was counted when it was refused
                self.shed("evicted")
        self._tier[conn] = IDLE
        self._takeable[IDLE][conn] = None
        return True

    def move(self, conn: Connection, tier: int) -> None:
        """The connection is now closing, idle, reading headers, or busy with a request."""
        old = self._tier.get(conn)
        if old is None or old == tier:
            return
        if old != BUSY:
            del self._takeable[old][conn]
        if tier != BUSY:
            self._takeable[tier][conn] = None
        self._tier[conn] = tier

    def forget(self, conn: Connection) -> None:
        """The connection is closed (or closing): it holds no place any more."""
        tier = self._tier.pop(conn, None)
        if tier is not None and tier != BUSY:
            del self._takeable[tier][conn]

    def refused(self, reason: str, status: int, client: str | None, seconds: float) -> None:
        """A request the edge answered itself (400 / 408 / 431): its one line and count."""
        self._counters[reason].inc()
        request_line(
            "edge_refused",
            "info",
            listener=self.name,
            status=status,
            error=reason,
            client=client,
            seconds=round(seconds, 5),
        )

    def shed(self, reason: str) -> None:
        """A connection closed or refused without a request: counted; the cap warns."""
        self._counters[reason].inc()
        if reason in _WARN:
            self._unwarned[reason] += 1
            self._warn()

    def _warn(self) -> None:
        now = self._clock()
        if now >= self._next_warning:
            self._next_warning = now + _WARN_EVERY
            counts = dict(self._unwarned)
            self._unwarned.clear()
            request_line(
                "edge_connection_limit",
                "warning",
                listener=self.name,
                max_connections=self.limits.max_connections,
                evicted=counts.get("evicted", 0),
                refused=counts.get("connection_limit", 0),
                interval_seconds=_WARN_EVERY,
            )
        elif self._warning_due is None:
            # The rest of this interval's count is reported when it ends.
            self._warning_due = asyncio.get_running_loop().call_later(
                self._next_warning - now, self._flush_warning
            )

    def _flush_warning(self) -> None:
        self._warning_due = None
        if self._unwarned:
            self._warn()
