"""What the Kafka sink does when the broker refuses: a producer batch refused for one
record, a refused SASL login, and topics the routes name but nothing was sent to.

Against the stand-in producer and admin client behind the sink's factory seams, raising
kafka-python's real exception types (``tests/sinks/_kafka.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import kafka.errors as ke
import pytest
import structlog
from structlog.testing import capture_logs

from sinks import PartialDeliveryError, PermanentSinkError, SinkUnavailableError
from tests.sinks._kafka import PASSWORD, FakePlan, fake_sink, make_event, plan, run

SASL_REFUSED = ke.SaslAuthenticationFailedError(
    "SaslAuthenticationFailedError: Authentication failed during authentication due to"
    " invalid credentials with SASL mechanism SCRAM-SHA-512"
)


def sized(seq: int, size: int) -> object:
    """An event whose record value is about ``size`` bytes."""
    return make_event(seq, pad="x" * max(0, size - 180))


def test_a_batch_refused_for_one_large_record_dead_letters_only_that_record(
    plan: FakePlan,
) -> None:
    """Topic max.message.bytes=3000, six events of which one is 20 kB: the broker refuses
    the whole producer batch; the sink re-sends the others and dead-letters only the big one."""
    plan.broker_max_message_bytes = 3000
    events = [sized(i, n) for i, n in enumerate([250, 260, 270, 20_000, 280, 290])]
    sink = fake_sink(plan)

    async def go() -> PartialDeliveryError:
        await sink.start()
        with pytest.raises(PartialDeliveryError) as info:
            await sink.send(events)  # type: ignore[arg-type]
        await sink.close()
        return info.value

    error = run(go())
    assert list(error.failures) == [3]
    assert isinstance(error.failures[3], PermanentSinkError)
    assert "MessageSizeTooLarge" in str(error.failures[3])
    assert sorted(plan.delivered) == ["evt_0", "evt_1", "evt_2", "evt_4", "evt_5"]
    assert len(plan.producers) == 1  # a refused record does not cost the connection


def test_two_refused_records_among_many_are_found_by_bisection(plan: FakePlan) -> None:
    """Two oversized records in a batch of 40: both dead-lettered, the 38 others delivered
    once each, in a number of flushes that grows with log(batch), not with its size."""
    plan.broker_max_message_bytes = 12_000
    events = [sized(i, 20_000 if i in (7, 30) else 250) for i in range(40)]
    sink = fake_sink(plan)

    async def go() -> PartialDeliveryError:
        await sink.start()
        with pytest.raises(PartialDeliveryError) as info:
            await sink.send(events)  # type: ignore[arg-type]
        await sink.close()
        return info.value

    error = run(go())
    assert sorted(error.failures) == [7, 30]
    assert sorted(plan.delivered) == sorted(f"evt_{i}" for i in range(40) if i not in (7, 30))
    assert plan.producers[0].flushes <= 1 + 4 * 6


def test_a_lone_refused_record_is_dead_lettered_without_resending(plan: FakePlan) -> None:
    """A single record the broker refuses is permanent at once (no one to re-send)."""
    plan.broker_max_message_bytes = 3000
    sink = fake_sink(plan)
    with pytest.raises(PermanentSinkError, match="MessageSizeTooLarge"):
        run(sink.send([sized(1, 20_000)]))  # type: ignore[list-item]
    assert plan.producers[0].flushes == 1


@contextmanager
def debug_logs() -> Iterator[list[dict[str, Any]]]:
    """capture_logs() with debug calls let through (an earlier test may have configured
    the info-level filtering logger); the previous configuration is restored."""
    before = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(wrapper_class=before)


def refused_login(plan: FakePlan) -> None:
    """The connect logs what kafka-python logs when the broker refuses SCRAM, then its
    constructor times out bootstrapping (kafka-python keeps retrying until then)."""
    plan.connect_logs = [
        (
            "kafka.net.manager",
            "Bootstrap connection to %s failed: %s (backoff %.2f secs)",
            ("bootstrap-0", SASL_REFUSED, 0.05),
        )
    ]
    plan.refuse_connect = ke.KafkaTimeoutError("Unable to bootstrap from 127.0.0.1:9092")


def sasl_sink(plan: FakePlan, monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setenv("KAFKA_PASSWORD", PASSWORD)
    return fake_sink(
        plan,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="bighub",
        sasl_password="env:KAFKA_PASSWORD",
    )


def test_a_refused_sasl_login_is_named_at_start_in_one_attempt(
    plan: FakePlan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """start() fails after the first (short) bootstrap attempt with the broker's reason,
    logged once by us; kafka-python's own ERROR lines stay at debug."""
    refused_login(plan)
    sink = sasl_sink(plan, monkeypatch)
    with debug_logs() as logs, pytest.raises(SinkUnavailableError) as info:
        run(sink.start())  # type: ignore[attr-defined]
    text = str(info.value)
    assert text.startswith("SASL authentication failed (SCRAM-SHA-512)")
    assert "invalid credentials" in text
    assert PASSWORD not in text
    assert plan.connects == 1
    [failed] = [e for e in logs if e["event"] == "kafka_start_failed"]
    assert "invalid credentials" in failed["error"]
    library = [e for e in logs if e["event"] == "kafka_library_log"]
    assert library
    assert {e["log_level"] for e in library} == {"debug"}
    assert not logging.getLogger("kafka").propagate


def test_a_refused_sasl_login_is_named_by_health(
    plan: FakePlan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """health() (what /readyz and check-config --probe show) names the refused login."""
    refused_login(plan)
    health = run(sasl_sink(plan, monkeypatch).health())  # type: ignore[attr-defined]
    assert not health.ok
    assert "SASL authentication failed (SCRAM-SHA-512)" in health.detail


def test_a_bootstrap_timeout_without_a_refusal_still_gets_the_tcp_diagnosis(
    plan: FakePlan,
) -> None:
    """No login error in the library's records: both attempts run, then the TCP diagnosis."""
    plan.refuse_connect = ke.KafkaTimeoutError("Unable to bootstrap")
    started = time.monotonic()
    with pytest.raises(SinkUnavailableError, match="no bootstrap server accepts connections"):
        run(fake_sink(plan, bootstrap_servers=["127.0.0.1:1"]).start())
    assert plan.connects == 2
    assert time.monotonic() - started < 10


def test_health_describes_routed_topics_without_creating_any(plan: FakePlan) -> None:
    """health() asks the admin client (no auto-create) about the routed topics; one that
    does not exist yet is reported, not a failure; no producer is built for it."""
    plan.topics = {"bighub.decision"}
    health = run(fake_sink(plan).health())
    assert health.ok, health.detail
    assert plan.described == [["bighub.approval", "bighub.decision", "bighub.other", "bighub.rule"]]
    assert plan.producers == []
    assert "metadata ok for bighub.decision" in health.detail
    assert "not created yet: bighub.approval, bighub.other, bighub.rule" in health.detail
    assert all(a.closed for a in plan.admins)


def test_health_fails_on_a_topic_the_client_may_not_use(plan: FakePlan) -> None:
    """TOPIC_AUTHORIZATION_FAILED (29) for a routed topic: not healthy, and it says which."""
    plan.topics = {"bighub.decision"}
    plan.topic_errors = {"bighub.decision": 29}
    health = run(fake_sink(plan, events=["decision_event.*"]).health())
    assert not health.ok
    assert "topic bighub.decision" in health.detail
    assert "TopicAuthorizationFailed" in health.detail


def test_health_also_checks_topics_sent_to(plan: FakePlan) -> None:
    """With a {source} topic the routes name no topic; health checks the ones sent to."""
    plan.topics = {"audit.bighub"}
    sink = fake_sink(plan, topic="audit.{source}")

    async def go() -> str:
        await sink.start()
        await sink.send([make_event(1)])
        health = await sink.health()
        await sink.close()
        assert health.ok
        return health.detail

    assert "metadata ok for audit.bighub" in run(go())


def test_a_batch_too_large_only_in_total_is_delivered_whole(plan: FakePlan) -> None:
    """Twelve 1 kB records refused together (3 kB limit): every half that fits goes
    through, so nothing is dead-lettered."""
    plan.broker_max_message_bytes = 3000
    sink = fake_sink(plan)
    run(sink.send([sized(i, 1000) for i in range(12)]))  # type: ignore[misc]
    assert sorted(plan.delivered) == sorted(f"evt_{i}" for i in range(12))
