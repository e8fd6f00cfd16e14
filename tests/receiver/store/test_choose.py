"""Choosing a batch, and counting on a held one, agree with reading the log whole."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from receiver.routing import matcher
from receiver.store._choose import choose, resume

TYPES = ("decision_event.created", "rule.patch_applied", "approval.created")
rows_st = st.lists(st.tuples(st.sampled_from(TYPES), st.integers(1, 500)), max_size=40)


def as_rows(spec: list[tuple[str, int]], start: int = 0) -> list[tuple[int, int, str, int, float]]:
    return [(0, start + i + 1, t, n, 1000.0 + start + i) for i, (t, n) in enumerate(spec)]


@given(
    spec=rows_st,
    split=st.integers(0, 40),
    limit=st.integers(1, 30),
    max_bytes=st.integers(1, 6000),
    narrow=st.booleans(),
)
def test_resuming_a_held_batch_equals_choosing_from_the_whole_log(
    spec: list[tuple[str, int]], split: int, limit: int, max_bytes: int, narrow: bool
) -> None:
    match = matcher(("decision_event.*",) if narrow else ("*",))
    split = min(split, len(spec))
    rows = as_rows(spec)
    first, later = rows[:split], rows[split:]
    end_first = (0, split)
    end = (0, len(rows))
    big = 10_000  # no scan cut here: the scan limit is a separate rule
    held = choose(first, match, limit=limit, max_bytes=max_bytes, end=end_first, scan=big)
    whole = choose(rows, match, limit=limit, max_bytes=max_bytes, end=end, scan=big)
    if held.full:
        assert whole.full
        return
    base = (0, 0)
    grown = resume(
        held.filling(base), later, match, limit=limit, max_bytes=max_bytes, end=end, scan=big
    )
    if grown is None:
        assert whole.full
        return
    assert not whole.full
    assert (grown.events, grown.size, grown.first_at) == (
        len(whole.chosen),
        whole.size,
        whole.first_at,
    )
    assert (grown.base, grown.scanned_to) == (base, end)


def test_a_scan_cut_short_sends_the_batch() -> None:
    """When a read looked at all the rows it may, the log goes on: the batch is read whole
    (and goes) rather than held on a count that stopped part way."""
    rows = as_rows([("rule.patch_applied", 10)] * 5)
    match = matcher(("decision_event.*",))
    pick = choose(rows, match, limit=10, max_bytes=10**6, end=(0, 99), scan=5)
    assert (pick.more, pick.full, pick.scanned_to, pick.chosen) == (True, True, (0, 5), [])
    held = choose([], match, limit=10, max_bytes=10**6, end=(0, 0), scan=5).filling((0, 0))
    assert resume(held, rows, match, limit=10, max_bytes=10**6, end=(0, 99), scan=5) is None
