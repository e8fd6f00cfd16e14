"""Group commit bookkeeping for both stores, without I/O.

``plan`` decides, before anything is written, which events of a group are candidates
to store and which are over the quota; ``answers`` turns what the database then
said back into one ``IngestResult`` per ingest call, in call order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from receiver.store.base import IngestOutcome, IngestResult, NewEvent

__all__ = ["Plan", "answers", "key", "plan"]

Key = tuple[str, str]


def key(event: NewEvent) -> Key:
    return (event.source, event.event_id)


@dataclass(frozen=True, slots=True)
class Plan:
    first: dict[Key, int]  # the position of each key's first copy in the group
    take: list[int]  # positions to insert, in (source, event id) order
    over: list[int]  # positions that would push the spool over its quota


def plan(
    items: Sequence[NewEvent],
    *,
    spool_bytes: int,
    spool_events: int,
    max_bytes: int,
    max_events: int,
) -> Plan:
    """Which events to insert, in key order, and which are over the quota.

    Every replica inserts in (source, event id) order, so two transactions holding
    the same new events lock them in the same order and cannot deadlock. Near the
    quota every candidate is counted as new: a group holding duplicates may refuse
    a little early, and the sender retries after ``Retry-After``.
    """
    first: dict[Key, int] = {}
    take: list[int] = []
    over: list[int] = []
    add_bytes = add_events = 0
    for i in sorted(range(len(items)), key=lambda i: key(items[i])):
        ev = items[i]
        if key(ev) in first:
            continue  # a second copy in this group: answered like the first
        first[key(ev)] = i
        if (
            spool_bytes + add_bytes + len(ev.body) > max_bytes
            or spool_events + add_events + 1 > max_events
        ):
            over.append(i)
            continue
        take.append(i)
        add_bytes += len(ev.body)
        add_events += 1
    return Plan(first, take, over)


def answers(
    items: Sequence[NewEvent], p: Plan, stored: dict[Key, int], held: set[Key]
) -> list[IngestResult]:
    """One result per item: stored -> accepted (first copy only), else duplicate or quota.

    Args:
        stored: seq of each event this group inserted.
        held: keys among ``p.over`` that the store already holds.
    """
    decided: dict[Key, IngestResult] = {}
    for i in p.take:
        seq = stored.get(key(items[i]))
        decided[key(items[i])] = (
            IngestResult(IngestOutcome.ACCEPTED, seq)
            if seq is not None
            else IngestResult(IngestOutcome.DUPLICATE)  # another process stored it first
        )
    for i in p.over:
        outcome = IngestOutcome.DUPLICATE if key(items[i]) in held else IngestOutcome.QUOTA
        decided[key(items[i])] = IngestResult(outcome)
    results = []
    for i, ev in enumerate(items):
        result = decided[key(ev)]
        if p.first[key(ev)] != i and result.outcome is IngestOutcome.ACCEPTED:
            result = IngestResult(IngestOutcome.DUPLICATE)
        results.append(result)
    return results
