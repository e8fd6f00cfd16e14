"""Helpers shared by the HEC sink tests: a running sink, event batches, index checks."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from sinks.base import Event
from sinks.splunk_hec import SplunkHecConfig, SplunkHecSink
from tests.fakes.hec import TOKEN, HecEmulator, make_event


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def running(
    url: str, tmp_path: Path, *, clock: Callable[[], float] = time.time, **extra: Any
) -> AsyncIterator[SplunkHecSink]:
    values: dict[str, Any] = {
        "name": "hec",
        "url": url,
        "token": TOKEN,
        "ack_state_path": tmp_path / "ack.json",
    }
    sink = SplunkHecSink(SplunkHecConfig(**{**values, **extra}), clock=clock)
    await sink.start()
    try:
        yield sink
    finally:
        await sink.close()


def batch_of(n: int, start: int = 0, **payload: Any) -> list[Event]:
    return [make_event(i, actor=f"agent:{i % 3}", **payload) for i in range(start, start + n)]


def ids(events: list[Event]) -> list[str]:
    return [e.event_id for e in events]


def assert_indexed_once(emulator: HecEmulator, expected: list[str]) -> None:
    counts = Counter(emulator.event_ids())
    assert sorted(counts) == sorted(expected), "lost or unexpected events"
    assert max(counts.values(), default=1) == 1, f"duplicates: {counts.most_common(3)}"
