"""Ingest first: the pacer bounds export's share of the time while webhooks arrive."""

from __future__ import annotations

import asyncio

import pytest

from receiver.pacing import DrainPacer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_no_webhooks_no_waiting() -> None:
    """Without recent webhooks a dispatcher is never held back."""
    clock = Clock()
    pacer = DrainPacer(0.25, clock=clock)
    pacer.spent(10.0)
    assert not pacer.ingesting
    asyncio.run(asyncio.wait_for(pacer.turn(), 0.1))


def test_while_ingesting_export_gets_its_share() -> None:
    """After a 30 ms batch at share 0.25 the next may start 90 ms later, for all
    dispatchers together; a webhook pause lifts the limit."""
    clock = Clock()
    pacer = DrainPacer(0.25, clock=clock)
    pacer.ingested()
    pacer.spent(0.030)
    assert pacer._free_at == pytest.approx(100.090)
    pacer.spent(0.030)  # another dispatcher's batch queues behind
    assert pacer._free_at == pytest.approx(100.180)
    clock.now = 100.180
    asyncio.run(asyncio.wait_for(pacer.turn(), 0.1))
    clock.now = 102.0  # no webhook for a second: flat out
    pacer.spent(1.0)
    assert not pacer.ingesting


def test_turn_waits_in_real_time() -> None:
    """turn() sleeps until the pacer is free (real clock)."""
    pacer = DrainPacer(0.5)
    pacer.ingested()
    pacer.spent(0.1)

    async def timed() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await pacer.turn()
        return loop.time() - started

    assert 0.05 < asyncio.run(timed()) < 0.5


def test_share_is_checked() -> None:
    with pytest.raises(ValueError, match="share"):
        DrainPacer(0)
