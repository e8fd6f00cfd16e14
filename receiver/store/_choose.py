"""Choosing a batch from the log rows after a cursor, the same way for every store.

A store's read selects light rows ``(xid, seq, event_type, size, received_at)`` after a
position, in log order, and hands them here. ``choose`` picks the batch: the rows the
sink's routes take, cut at a count or byte limit. ``resume`` carries on counting a batch
held back to fill (``Filling``) over only the rows that arrived since the last read, so a
sink that waits minutes for a large batch (the S3 archive, Security Lake) does not re-read
everything it holds on every poll: that re-read was an O(n) scan per second on the
store's reader, and stalled webhooks by tens of milliseconds while it held the GIL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from receiver.store.base import Filling, Position

__all__ = ["Choice", "choose", "resume"]

Row = Sequence[Any]  # (xid, seq, event_type, size, received_at)


@dataclass(frozen=True, slots=True)
class Choice:
    """What ``choose`` picked: the positions, their bytes, and how far it looked.

    ``more``: the log goes on past ``scanned_to`` (cut by a limit, or the scan ran out).
    ``full``: the batch cannot grow, so it goes now however young it is."""

    chosen: list[Position]
    size: int
    first_at: float
    scanned_to: Position
    more: bool
    full: bool

    def filling(self, base: Position) -> Filling:
        return Filling(base, self.scanned_to, len(self.chosen), self.size, self.first_at)


def choose(
    rows: Sequence[Row],
    match: Callable[[str], bool] | None,
    *,
    limit: int,
    max_bytes: int,
    end: Position,
    scan: int,
) -> Choice:
    """The batch among ``rows`` (read up to ``end``, at most ``scan`` of them)."""
    chosen: list[Position] = []
    size = 0
    first_at = 0.0
    for xid, seq, event_type, n, received_at in rows:
        if match is not None and not match(event_type):
            continue
        if len(chosen) == limit or (chosen and size + n > max_bytes):
            # Cut here: the rest waits for the next batch.
            return Choice(chosen, size, first_at, chosen[-1], True, True)
        if not chosen:
            first_at = float(received_at)
        chosen.append((int(xid), int(seq)))
        size += n
    if len(rows) == scan:  # looked at all it may; the log goes on
        last = rows[-1]
        return Choice(chosen, size, first_at, (int(last[0]), int(last[1])), True, True)
    full = len(chosen) >= limit or size >= max_bytes
    return Choice(chosen, size, first_at, end, False, full)


def resume(
    filling: Filling,
    rows: Sequence[Row],
    match: Callable[[str], bool] | None,
    *,
    limit: int,
    max_bytes: int,
    end: Position,
    scan: int,
) -> Filling | None:
    """``filling`` grown by ``rows`` (those after ``filling.scanned_to``, up to ``end``),
    or None when the batch is full and should be read whole."""
    events, size, first_at = filling.events, filling.size, filling.first_at
    for _xid, _seq, event_type, n, received_at in rows:
        if match is not None and not match(event_type):
            continue
        if events >= limit or (events and size + n > max_bytes):
            return None
        if not events:
            first_at = float(received_at)
        events += 1
        size += n
    if len(rows) == scan or events >= limit or size >= max_bytes:
        return None
    return Filling(filling.base, end, events, size, first_at)
