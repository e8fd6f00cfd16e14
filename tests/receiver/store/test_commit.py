"""The group-commit engine (receiver/store/_commit.py) with a commit function we own."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from receiver.errors import EventRefusedError, OverloadedError, StoreError
from receiver.store import IngestOutcome, IngestResult, NewEvent
from receiver.store._commit import GROUP_MAX_BYTES, Admission, GroupCommitter
from tests.receiver.store.backends import new_event

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Recorder:
    """Commits what it is given (recording the groups), or waits until released."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.refuse: set[str] = set()

    async def __call__(self, events: Sequence[NewEvent]) -> list[IngestResult]:
        await self.gate.wait()
        if self.refuse & {e.event_id for e in events}:
            raise EventRefusedError("the database cannot hold this")
        self.groups.append([e.event_id for e in events])
        return [IngestResult(IngestOutcome.ACCEPTED, n) for n, _ in enumerate(events)]


async def test_concurrent_calls_share_groups() -> None:
    """Calls arriving together are committed together, every one answered."""
    rec = Recorder()
    engine = GroupCommitter(rec)
    engine.start()
    try:
        rec.gate.clear()
        first = asyncio.ensure_future(engine.submit(new_event("first")))
        await asyncio.sleep(0.01)  # the first group is in its commit now
        rest = [asyncio.ensure_future(engine.submit(new_event(f"e{i}"))) for i in range(50)]
        rec.gate.set()
        results = await asyncio.gather(first, *rest)
        assert all(r.outcome is IngestOutcome.ACCEPTED for r in results)
        assert rec.groups == [["first"], [f"e{i}" for i in range(50)]]
        assert engine.in_flight == (0, 0)
    finally:
        await engine.close()


async def test_group_bytes_bounded_but_one_always_goes() -> None:
    """A group stops before its byte budget, yet a single huge event still goes."""
    rec = Recorder()
    engine = GroupCommitter(rec, admission=Admission(max_bytes=4 * GROUP_MAX_BYTES))
    engine.start()
    try:
        rec.gate.clear()
        half = b"x" * (GROUP_MAX_BYTES // 2)
        calls = [engine.submit(new_event(f"e{i}", body=half)) for i in range(3)]
        calls.append(engine.submit(new_event("huge", body=b"x" * (GROUP_MAX_BYTES + 1))))
        gathered = asyncio.gather(*calls)
        await asyncio.sleep(0.01)
        rec.gate.set()
        await gathered
        assert rec.groups == [["e0", "e1"], ["e2"], ["huge"]]
    finally:
        await engine.close()


async def test_bound_by_count_and_bytes_refuses_at_the_door() -> None:
    """Past either bound a call is refused at once and holds nothing."""
    rec = Recorder()
    rec.gate.clear()
    engine = GroupCommitter(rec, admission=Admission(max_events=3, max_bytes=10_000))
    engine.start()
    try:
        held = [asyncio.ensure_future(engine.submit(new_event(f"e{i}"))) for i in range(3)]
        await asyncio.sleep(0)
        with pytest.raises(OverloadedError, match="queue is full"):
            await engine.submit(new_event("one-more"))
        assert engine.in_flight[0] == 3
        rec.gate.set()
        await asyncio.gather(*held)
        big = GroupCommitter(rec, admission=Admission(max_events=100, max_bytes=1000))
        big.start()
        try:
            with pytest.raises(OverloadedError):
                await big.submit(new_event("big", body=b"x" * 1001))
        finally:
            await big.close()
    finally:
        await engine.close()


async def test_deadline_answers_queued_and_committing_calls() -> None:
    """A stalled commit: every call is answered 503 by its deadline, queued or not."""
    rec = Recorder()
    rec.gate.clear()
    engine = GroupCommitter(rec, admission=Admission(deadline_seconds=0.2))
    engine.start()
    try:
        calls = [asyncio.ensure_future(engine.submit(new_event(f"e{i}"))) for i in range(5)]
        await asyncio.sleep(0.01)
        calls += [asyncio.ensure_future(engine.submit(new_event(f"q{i}"))) for i in range(5)]
        done, pending = await asyncio.wait(calls, timeout=1.0)
        assert not pending
        assert all(isinstance(c.exception(), OverloadedError) for c in done)
        # The stalled group still holds its bodies; the queued ones were let go.
        assert engine.in_flight[0] == 5
        rec.gate.set()
        await asyncio.sleep(0.05)
        assert engine.in_flight == (0, 0)
        assert rec.groups == [[f"e{i}" for i in range(5)]]  # the queued ones never went
    finally:
        await engine.close()


async def test_refused_event_fails_alone() -> None:
    """A group the database refuses for one event's data is split until it is found."""
    rec = Recorder()
    rec.refuse = {"bad"}
    rec.gate.clear()
    engine = GroupCommitter(rec)
    engine.start()
    try:
        names = [f"e{i}" for i in range(20)]
        names.insert(7, "bad")
        calls = [engine.submit(new_event(n)) for n in names]
        gathered = asyncio.gather(*calls, return_exceptions=True)
        await asyncio.sleep(0.01)
        rec.gate.set()
        results = await gathered
        assert isinstance(results[7], EventRefusedError)
        assert all(not isinstance(r, BaseException) for i, r in enumerate(results) if i != 7)
        assert sorted(n for g in rec.groups for n in g) == sorted(n for n in names if n != "bad")
    finally:
        await engine.close()


async def test_commit_failure_fails_the_group_and_the_writer_lives() -> None:
    """An unexpected error answers its group with a StoreError; later groups commit."""
    calls = 0

    async def flaky(events: Sequence[NewEvent]) -> list[IngestResult]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return [IngestResult(IngestOutcome.ACCEPTED, 1) for _ in events]

    engine = GroupCommitter(flaky)
    engine.start()
    try:
        with pytest.raises(StoreError):
            await engine.submit(new_event("e1"))
        assert (await engine.submit(new_event("e2"))).outcome is IngestOutcome.ACCEPTED
    finally:
        await engine.close()
