"""Which sinks an event goes to: each sink's ``events`` glob patterns."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase

from sinks import SinkConfig

__all__ = ["Router", "matcher"]

_CACHE_MAX = 10_000  # event types are few; bound the caches all the same


def matcher(patterns: Sequence[str]) -> Callable[[str], bool] | None:
    """A cached test of event types against case-sensitive globs; None when one
    pattern is ``*`` (everything matches, nothing to test)."""
    if "*" in patterns:
        return None
    globs = tuple(patterns)
    cache: dict[str, bool] = {}

    def match(event_type: str) -> bool:
        hit = cache.get(event_type)
        if hit is None:
            hit = any(fnmatchcase(event_type, p) for p in globs)
            if len(cache) < _CACHE_MAX:
                cache[event_type] = hit
        return hit

    return match


class Router:
    """Matches event types against every sink's patterns."""

    def __init__(self, sinks: Sequence[SinkConfig]) -> None:
        self._sinks = [(s.name, matcher(s.events)) for s in sinks]
        self._cache: dict[str, tuple[str, ...]] = {}

    def route(self, event_type: str) -> tuple[str, ...]:
        hit = self._cache.get(event_type)
        if hit is None:
            hit = tuple(name for name, match in self._sinks if match is None or match(event_type))
            if len(self._cache) < _CACHE_MAX:
                self._cache[event_type] = hit
        return hit
