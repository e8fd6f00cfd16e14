"""Helpers shared by the Sentinel sink tests: a running sink, event batches, a clock."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sinks.base import Event
from sinks.sentinel import SentinelConfig, SentinelSink
from tests.fakes.azure import Azure
from tests.fakes.hec import make_event

T = TypeVar("T")


class Clock:
    """A monotonic clock the test moves by hand (the sink's hold after Retry-After)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def running(
    azure: Azure, clock: Callable[[], float] | None = None, **extra: Any
) -> AsyncIterator[SentinelSink]:
    config = SentinelConfig(**azure.sink_config(**extra))
    sink = SentinelSink(config, monotonic=clock) if clock else SentinelSink(config)
    await sink.start()
    try:
        yield sink
    finally:
        await sink.close()


def run(fn: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await fn()

    return asyncio.run(main())


def decisions(n: int, start: int = 0, **payload: Any) -> list[Event]:
    return [
        make_event(i, actor=f"agent:{i % 3}", decision="blocked", risk_score=0.5, **payload)
        for i in range(start, start + n)
    ]


def rule_changes(n: int, start: int = 0) -> list[Event]:
    return [
        make_event(i, "rule.patch_applied", rule_id=f"rule-{i}", actor="user:a", patch={"x": i})
        for i in range(start, start + n)
    ]


def ids(events: list[Event]) -> list[str]:
    return [e.event_id for e in events]


def assert_ingested_once(azure: Azure, expected: list[str]) -> None:
    counts = Counter(azure.dce.event_ids())
    assert sorted(counts) == sorted(expected), "lost or unexpected events"
    assert max(counts.values(), default=1) == 1, f"duplicates: {counts.most_common(3)}"
