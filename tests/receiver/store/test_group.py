"""Group commit bookkeeping (receiver/store/_group.py), no database needed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from receiver.store import IngestOutcome, NewEvent
from receiver.store._group import answers, plan
from tests.receiver.store.backends import new_event

A, D, Q = IngestOutcome.ACCEPTED, IngestOutcome.DUPLICATE, IngestOutcome.QUOTA


def test_plan_inserts_in_key_order_and_cuts_at_the_quota() -> None:
    """Candidates come in (source, event id) order; the rest is over the quota."""
    items = [new_event(n) for n in ("c", "a", "d", "b")]
    p = plan(items, spool_bytes=0, spool_events=8, max_bytes=10**9, max_events=10)
    assert [items[i].event_id for i in p.take] == ["a", "b"]
    assert [items[i].event_id for i in p.over] == ["c", "d"]


def test_every_event_counts_against_the_quota() -> None:
    """An event this process routes nowhere still takes room: routes apply at dispatch."""
    items = [new_event("a", sinks=()), new_event("b"), new_event("c")]
    p = plan(items, spool_bytes=0, spool_events=0, max_bytes=10**9, max_events=2)
    assert sorted(items[i].event_id for i in p.take) == ["a", "b"]


def test_answers_in_call_order_with_copies_and_races() -> None:
    """First copy accepted, later copies duplicate; stored elsewhere means duplicate."""
    items = [new_event("b"), new_event("a"), new_event("b"), new_event("c"), new_event("z")]
    p = plan(items, spool_bytes=0, spool_events=0, max_bytes=10**9, max_events=3)
    stored = {("bighub", "a"): 1, ("bighub", "b"): 2}  # "c" lost a race to another replica
    held = {("bighub", "z")}
    got = [r.outcome for r in answers(items, p, stored, held)]
    assert got == [A, A, D, D, D]
    assert answers(items, p, stored, set())[4].outcome is Q


@given(
    names=st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=30),
    used=st.integers(0, 10),
    limit=st.integers(1, 12),
)
def test_every_call_gets_one_answer_and_each_key_at_most_one_acceptance(
    names: list[str], used: int, limit: int
) -> None:
    """Whatever the group, no key is accepted twice and the quota is never passed."""
    items = [new_event(n) for n in names]
    p = plan(items, spool_bytes=0, spool_events=used, max_bytes=10**9, max_events=limit)
    stored = {(items[i].source, items[i].event_id): i for i in p.take}  # nothing held before
    results = answers(items, p, stored, set())
    assert len(results) == len(items)
    accepted = [items[i].event_id for i, r in enumerate(results) if r.outcome is A]
    assert len(accepted) == len(set(accepted)) == len(p.take)
    assert used + len(accepted) <= max(limit, used)
