"""The outcome of a send as a pure function (receiver/outcome.py), and a model of a sink's
cursor driven by it over random outcome sequences."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from receiver.outcome import Policy, decide, progress
from receiver.store import Lease, LogBatch
from sinks import (
    Event,
    PartialDeliveryError,
    PermanentSinkError,
    RetryableSinkError,
    SinkError,
    SinkUnavailableError,
)

POLICY = Policy(max_attempts=3, retry_initial_seconds=1.0, retry_max_seconds=60.0)


def test_all_confirmed_moves_to_the_end_of_the_read() -> None:
    """Everything delivered: the cursor goes to scanned_to, nothing waits."""
    d = decide(3, None, attempts=2, outage=0, policy=POLICY, rng=random.Random(1))
    assert (d.delivered, d.dead, d.retry_from, d.attempts, d.delay) == ((0, 1, 2), (), None, 0, 0)


def test_mixed_retryable_and_unavailable_waits_for_the_longer_backoff() -> None:
    """A partial failure with both kinds waits out the longest delay that applies."""
    error = PartialDeliveryError({0: SinkUnavailableError("down"), 2: RetryableSinkError("slow")})
    policy = Policy(max_attempts=10, retry_initial_seconds=1.0, retry_max_seconds=1000.0)
    d = decide(4, error, attempts=0, outage=6, policy=policy, rng=random.Random(1))
    assert d.retry_from == 0
    assert d.delivered == (1, 3)
    assert d.charged
    assert d.delay >= 32  # the unavailable backoff after 7 outages: 64 s nominal, >= half
    assert d.unavailable == "down"


def test_unavailable_alone_charges_nothing() -> None:
    d = decide(
        2, SinkUnavailableError("token"), attempts=1, outage=0, policy=POLICY, rng=random.Random(1)
    )
    assert (d.retry_from, d.attempts, d.charged) == (0, 1, False)


def test_whole_batch_at_its_last_attempt_isolates_the_head() -> None:
    """A batch failing at max_attempts is not dead-lettered: its head goes alone next."""
    err = RetryableSinkError("500")
    d = decide(5, err, attempts=2, outage=0, policy=POLICY, rng=random.Random(1))
    assert (d.dead, d.retry_from, d.attempts) == ((), 0, 3)
    alone = decide(1, err, attempts=3, outage=0, policy=POLICY, rng=random.Random(1))
    assert alone.dead == ((0, "max attempts reached; last error: 500", 4),)
    assert alone.retry_from is None


def test_permanent_and_expired_are_dead_letters_and_the_head_moves() -> None:
    error = PartialDeliveryError({0: PermanentSinkError("poison"), 2: RetryableSinkError("x")})
    d = decide(4, error, expired=[0], attempts=1, outage=0, policy=POLICY, rng=random.Random(1))
    # Index 0 expired (not sent): the sink saw [1, 2, 3]; its position 0 is batch index 1.
    assert [i for i, _, _ in d.dead] == [0, 1]
    assert d.dead[0][1].startswith("expired")
    assert d.retry_from == 3
    assert d.attempts == 1  # a new head: its first charged failure
    assert d.delivered == (2,)


def test_a_sink_bug_is_retried() -> None:
    d = decide(2, ValueError("bug"), attempts=0, outage=0, policy=POLICY, rng=random.Random(1))
    assert d.retry_from == 0
    assert "unexpected ValueError" in (d.error or "")


# -- a model of one sink's cursor, driven by random outcomes ------------------------------


def _event(i: int) -> Event:
    return Event(i, f"e{i}", "body", "t", "other", None, 0.0, "s", None, b"{}")


@dataclass
class Model:
    """The log, one cursor with its done set, and what the sink was sent / confirmed."""

    n: int
    position: int = 0  # events 1..position are finished
    attempts: int = 0
    done: set[int] = field(default_factory=set)
    delivered: list[int] = field(default_factory=list)
    dead: set[int] = field(default_factory=set)
    sends: list[list[int]] = field(default_factory=list)

    def read(self, limit: int) -> LogBatch:
        seqs = [s for s in range(self.position + 1, self.n + 1) if s not in self.done][:limit]
        more = len(seqs) == limit and seqs[-1] < self.n
        end = seqs[-1] if more else self.n
        return LogBatch(tuple(_event(s) for s in seqs), tuple((0, s) for s in seqs), (0, end), more)


outcome = st.one_of(
    st.just("ok"),
    st.just("retry"),
    st.just("down"),
    st.just("permanent"),
    st.lists(st.sampled_from(["ok", "retry", "down", "permanent"]), min_size=1, max_size=6),
)


def _error(kind: str | list[str], size: int) -> SinkError | None:
    one = {
        "retry": RetryableSinkError("r"),
        "down": SinkUnavailableError("d"),
        "permanent": PermanentSinkError("p"),
    }
    if kind == "ok":
        return None
    if isinstance(kind, str):
        return one[kind]
    failures = {i: one[k] for i, k in enumerate(kind[:size]) if k != "ok"}
    return PartialDeliveryError(failures) if failures else None


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 30),
    limit=st.integers(1, 8),
    outcomes=st.lists(outcome, max_size=60),
)
def test_no_event_overtakes_an_older_unsettled_one(
    n: int, limit: int, outcomes: list[str | list[str]]
) -> None:
    """Over any sequence of outcomes: every send starts at the oldest unsettled event and
    holds every unsettled event up to its last; a delivered event is never sent again;
    once the sink answers ok for good, every event ends delivered or dead, once."""
    m = Model(n)
    rng = random.Random(0)
    script = [*outcomes, *(["ok"] * (4 * n + 10))]  # then the sink recovers for good
    for kind in script:
        size = 1 if m.attempts >= POLICY.max_attempts else limit
        batch = m.read(size)
        if not batch.events:
            break
        seqs = [e.seq for e in batch.events]
        unsettled = [s for s in range(1, seqs[-1] + 1) if s not in m.delivered and s not in m.dead]
        assert seqs == unsettled, "a send skipped an older unsettled event"
        assert not set(seqs) & set(m.delivered), "a delivered event was sent again"
        m.sends.append(seqs)
        decision = decide(
            len(seqs),
            _error(kind, len(seqs)),
            attempts=m.attempts,
            outage=0,
            policy=POLICY,
            rng=rng,
        )
        lease = Lease("s", "o", 1, (0, m.position), m.attempts)
        p = progress(lease, batch, decision, now=0.0)
        retried = [i for i, e in _failures(kind, len(seqs)).items() if not _permanent(e)]
        for _, reason, _ in decision.dead:
            if reason.startswith("max attempts"):
                assert len(retried) == 1, "dead at max attempts while others failed with it"
        m.delivered += [seqs[i] for i in decision.delivered]
        m.dead |= {d.seq for d in p.dead}
        m.position = max(m.position, p.position[1])
        m.done = {s for s in m.done | {q[1] for q in p.done} if s > m.position}
        m.attempts = p.attempts
    assert len(m.delivered) == len(set(m.delivered))
    assert set(m.delivered) | m.dead == set(range(1, n + 1))
    assert not set(m.delivered) & m.dead


def _failures(kind: str | list[str], size: int) -> dict[int, SinkError]:
    from receiver.outcome import failures_of

    return failures_of(size, _error(kind, size))


def _permanent(e: SinkError) -> bool:
    return isinstance(e, PermanentSinkError)
