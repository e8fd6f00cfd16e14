"""Which sinks an event goes to: each sink's ``events`` glob patterns."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from sinks import SinkConfig

__all__ = ["Router"]


class Router:
    """Matches event types against every sink's patterns (case-sensitive globs)."""

    def __init__(self, sinks: Sequence[SinkConfig]) -> None:
        self._sinks = [(s.name, tuple(s.events)) for s in sinks]
        self._cache: dict[str, tuple[str, ...]] = {}

    def route(self, event_type: str) -> tuple[str, ...]:
        hit = self._cache.get(event_type)
        if hit is None:
            hit = tuple(
                name
                for name, patterns in self._sinks
                if any(fnmatchcase(event_type, p) for p in patterns)
            )
            if len(self._cache) < 10_000:  # event types are few; bound it all the same
                self._cache[event_type] = hit
        return hit
