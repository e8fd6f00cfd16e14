"""``KafkaSink.health()``: a fresh connection, then metadata for the topics routes name.

A fresh admin client, so the answer is about now (the sending producer caches
metadata) and a refused login (TLS, SASL) is named. Its metadata request never
creates a topic: where brokers auto-create topics, a producer's metadata request
would create every topic a route could name, including ones nothing is ever sent
to. A topic that does not exist yet is reported, not counted as a failure: the
first send creates it where brokers auto-create topics, and fails visibly where
they do not. It runs on its own worker thread beside the sending one, so a slow send
does not hold it up, and each step is bounded so the whole check ends before the
dispatcher's own 15 s limit: ``/readyz`` shows our diagnosis, not a bare timeout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sinks.base import SinkError, SinkHealth
from sinks.kafka.config import KafkaConfig

if TYPE_CHECKING:
    from sinks.kafka._client import ProducerClient

__all__ = ["HEALTH_STEP_MS", "check", "time_limit"]

# Each step of a health check (TLS, bootstrap, the metadata request) gets at most this.
HEALTH_STEP_MS = 5000
_CLOSE_SECONDS = 5.0


def time_limit(config: KafkaConfig) -> float:
    """Longest the whole check may take: below the dispatcher's 15 s health timeout."""
    step = min(config.request_timeout_ms, HEALTH_STEP_MS) / 1000
    return min(14.0, 3 * step + 2 * len(config.bootstrap_servers) + _CLOSE_SECONDS)


def check(client: ProducerClient, topics: Sequence[str], note: str) -> SinkHealth:
    """Connect with a fresh admin client and describe ``topics`` (blocking)."""
    try:
        states = client.describe(topics, min(client.config.request_timeout_ms, HEALTH_STEP_MS))
    except SinkError as exc:
        return SinkHealth(False, str(exc))
    problems = [f"topic {s.topic}: {s.problem}" for s in states if s.problem]
    if problems:
        return SinkHealth(False, "; ".join(problems))
    present = [s.topic for s in states if s.exists]
    missing = [s.topic for s in states if not s.exists]
    parts = [
        f"metadata ok for {', '.join(present)}" if present else "",
        f"not created yet: {', '.join(missing)}" if missing else "",
        note,
    ]
    return SinkHealth(True, "; ".join(p for p in parts if p) or "connected")
