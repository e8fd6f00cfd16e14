"""What one send's outcome means for a sink's cursor: a pure function, no I/O.

The dispatcher sends a batch read after the cursor, in log order, then asks
``decide`` what happened and ``progress`` where the cursor goes:

- events the sink confirmed are delivered; events it can never take
  (``PermanentSinkError``) or that are older than ``max_age_seconds`` are
  dead-lettered;
- the first event that failed retryably becomes the head: the cursor stops just
  before it, everything the sink took after it goes in the cursor's done set, and
  the head and the failed events after it are sent again after a backoff — newer
  events never overtake an older one (strict per-sink order);
- ``SinkUnavailableError`` (the destination refuses everything) charges nothing and
  waits at least the ``Retry-After`` the destination named (capped at
  ``retry_max_seconds``); other retryable failures charge the head one attempt. The
  delay is the longest of the backoffs that apply (a mixed outcome waits for both);
- at ``max_attempts`` the head is dead-lettered only if it failed alone; when a
  whole batch failed at its last attempt, nobody can tell which event is at fault,
  so the head gets one more attempt on its own first (never a dead letter for an
  event that did nothing wrong).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from receiver.store.base import DeadEvent, Lease, LogBatch, Progress, Requeued, RequeueSettlement
from sinks import (
    PartialDeliveryError,
    PermanentSinkError,
    RetryableSinkError,
    SinkError,
    SinkUnavailableError,
)

__all__ = [
    "Decision",
    "Policy",
    "backoff_delay",
    "decide",
    "failures_of",
    "progress",
    "settle_requeued",
]

EXPIRED = "expired: older than max_age_seconds"


def backoff_delay(attempt: int, initial: float, cap: float, rng: random.Random) -> float:
    """Delay before attempt ``attempt + 1``: exponential, capped, with equal jitter.

    Half of the delay is fixed and half random, so retries spread out but never
    come back sooner than half the nominal delay.
    """
    nominal = min(cap, initial * float(2 ** max(0, min(attempt - 1, 40))))
    return float(nominal / 2 + rng.uniform(0, nominal / 2))


@dataclass(frozen=True, slots=True)
class Policy:
    """The sink's retry settings (``SinkConfig``)."""

    max_attempts: int
    retry_initial_seconds: float
    retry_max_seconds: float

    def delay(self, attempt: int, rng: random.Random) -> float:
        return backoff_delay(attempt, self.retry_initial_seconds, self.retry_max_seconds, rng)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one send, by batch index.

    ``retry_from``: the index of the new head (None when every event is settled);
    ``attempts``: the head's charged failures now; ``delay``: seconds to wait before
    the next attempt; ``unavailable``: the sink refused everything (its reason).
    """

    delivered: tuple[int, ...]
    dead: tuple[tuple[int, str, int], ...]  # index, reason, attempts
    retry_from: int | None
    attempts: int
    delay: float
    error: str | None
    unavailable: str | None
    charged: bool


def failures_of(n: int, error: BaseException | None) -> dict[int, SinkError]:
    """Which of ``n`` sent events failed, and how. An exception that is not a
    ``SinkError`` is a sink bug: retryable, so nothing is lost to it."""
    if error is None:
        return {}
    if isinstance(error, PartialDeliveryError):
        return {i: e for i, e in error.failures.items() if 0 <= i < n}
    if not isinstance(error, SinkError):
        error = RetryableSinkError(f"unexpected {type(error).__name__}: {error}")
    return dict.fromkeys(range(n), error)


def decide(
    n: int,
    error: BaseException | None,
    *,
    expired: Sequence[int] = (),
    attempts: int,
    outage: int,
    policy: Policy,
    rng: random.Random,
) -> Decision:
    """Decide a send of ``n`` events in log order.

    Args:
        error: what ``send`` raised (None: all confirmed); positions in a
            ``PartialDeliveryError`` count among the events actually sent, i.e.
            the indices not in ``expired``.
        expired: indices not sent at all (past ``max_age_seconds``).
        attempts: the head's charged failures before this send (``Lease.attempts``).
        outage: consecutive unavailable outcomes before this one.
    """
    gone = set(expired)
    sent = [i for i in range(n) if i not in gone]
    failed = {sent[k]: e for k, e in failures_of(len(sent), error).items()}
    dead: list[tuple[int, str, int]] = [(i, EXPIRED, attempts if i == 0 else 0) for i in expired]
    retry: dict[int, SinkError] = {}
    for i, exc in sorted(failed.items()):
        if isinstance(exc, PermanentSinkError):
            dead.append((i, f"permanent: {exc}", (attempts if i == 0 else 0) + 1))
        else:
            retry[i] = exc
    if not retry:
        return _settled(n, failed, gone, dead)
    head = min(retry)
    charged = any(not isinstance(e, SinkUnavailableError) for e in retry.values())
    now_attempts = (attempts if head == 0 else 0) + int(charged)
    reason = str(next(e for e in retry.values() if not charged or not _down(e)))
    if charged and now_attempts >= policy.max_attempts:
        if len(retry) == 1:  # it failed alone: it is the one at fault
            dead.append((head, f"max attempts reached; last error: {reason}", now_attempts))
            return _settled(n, failed, gone, dead)
        now_attempts = policy.max_attempts  # the head goes alone next (see module doc)
    delays = [policy.delay(now_attempts, rng)] if charged else []
    down = [e for e in retry.values() if _down(e)]
    if down:
        delays.append(max(policy.delay(outage + 1, rng), _asked_wait(down, policy)))
    return Decision(
        delivered=tuple(i for i in sent if i not in failed),
        dead=tuple(sorted(dead)),
        retry_from=head,
        attempts=now_attempts,
        delay=max(delays),
        error=reason if charged else f"unavailable: {reason}",
        unavailable=str(down[0]) if down else None,
        charged=charged,
    )


def _down(exc: SinkError) -> bool:
    return isinstance(exc, SinkUnavailableError)


def _asked_wait(down: Sequence[SinkError], policy: Policy) -> float:
    """The longest ``Retry-After`` a refusing destination asked for, capped at
    ``retry_max_seconds`` so an absurd value cannot park the sink."""
    asked = [
        e.retry_after
        for e in down
        if isinstance(e, SinkUnavailableError) and e.retry_after is not None
    ]
    return min(max(asked), policy.retry_max_seconds) if asked else 0.0


def _settled(
    n: int, failed: Mapping[int, SinkError], gone: set[int], dead: list[tuple[int, str, int]]
) -> Decision:
    return Decision(
        delivered=tuple(i for i in range(n) if i not in failed and i not in gone),
        dead=tuple(sorted(dead)),
        retry_from=None,
        attempts=0,
        delay=0.0,
        error=None,
        unavailable=None,
        charged=False,
    )


def progress(lease: Lease, batch: LogBatch, decision: Decision, *, now: float) -> Progress:
    """The cursor write for ``decision`` on ``batch`` (read under ``lease``)."""
    dead = tuple(
        DeadEvent(batch.events[i].seq, batch.positions[i], tries, reason)
        for i, reason, tries in decision.dead
    )
    head = decision.retry_from
    if head is None:
        return Progress(position=batch.scanned_to, dead=dead)
    taken = set(decision.delivered) | {i for i, _, _ in decision.dead}
    return Progress(
        position=batch.positions[head - 1] if head > 0 else lease.position,
        done=tuple(batch.positions[i] for i in sorted(taken) if i > head),
        dead=dead,
        attempts=decision.attempts,
        next_attempt_at=now + decision.delay,
        last_error=decision.error,
    )


def settle_requeued(
    items: Sequence[Requeued],
    error: BaseException | None,
    *,
    now: float,
    max_age_seconds: float,
    outage: int,
    policy: Policy,
    rng: random.Random,
) -> tuple[RequeueSettlement, float]:
    """The outcome of a send of re-queued dead letters, and how long to wait.

    These are old events an operator asked for again, outside the log order: each
    keeps its own attempt count and goes back to the dead letters on its own.
    """
    expired = [
        i
        for i, r in enumerate(items)
        if now - max(r.event.received_at, r.requeued_at) > max_age_seconds
    ]
    sent = [i for i in range(len(items)) if i not in expired]
    failed = {sent[k]: e for k, e in failures_of(len(sent), error).items()}
    delivered = tuple(items[i].dead_letter_id for i in sent if i not in failed)
    dead = [(items[i].dead_letter_id, EXPIRED) for i in expired]
    retry: list[tuple[int, float, str, bool]] = []
    delay = 0.0
    for i, exc in sorted(failed.items()):
        item = items[i]
        if isinstance(exc, PermanentSinkError):
            dead.append((item.dead_letter_id, f"permanent: {exc}"))
            continue
        charge = not _down(exc)
        if charge and item.attempts + 1 >= policy.max_attempts:
            dead.append((item.dead_letter_id, f"max attempts reached; last error: {exc}"))
            continue
        wait = policy.delay(item.attempts + 1 if charge else outage + 1, rng)
        if not charge:
            wait = max(wait, _asked_wait([exc], policy))
        delay = max(delay, wait)
        retry.append((item.dead_letter_id, now + wait, str(exc), charge))
    return RequeueSettlement(delivered, tuple(retry), tuple(dead)), delay
