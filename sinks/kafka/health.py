"""``KafkaSink.health()``: a fresh connection, then metadata for the topics routes name.

A fresh producer, so the answer is about now (the sending producer caches
metadata). It runs on its own worker thread beside the sending one, so a slow send
does not hold it up, and each step is bounded so the whole check ends before the
dispatcher's own 15 s limit: ``/readyz`` shows our diagnosis, not a bare timeout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sinks.base import SinkError, SinkHealth
from sinks.kafka.config import KafkaConfig

if TYPE_CHECKING:
    from sinks.kafka._client import ProducerClient

__all__ = ["HEALTH_STEP_MS", "check", "time_limit"]

# Each step of a health check (TLS, bootstrap, metadata per topic) gets at most this.
HEALTH_STEP_MS = 5000
_CLOSE_SECONDS = 5.0


def time_limit(config: KafkaConfig, topics: int) -> float:
    """Longest the whole check may take: below the dispatcher's 15 s health timeout."""
    step = min(config.request_timeout_ms, HEALTH_STEP_MS) / 1000
    return min(14.0, 3 * step + 2 * len(config.bootstrap_servers) + step * topics + _CLOSE_SECONDS)


def check(client: ProducerClient, topics: list[str], note: str) -> SinkHealth:
    """Connect with a fresh producer and fetch metadata for ``topics`` (blocking)."""
    from sinks.kafka._client import close_quietly

    try:
        producer = client.connect(min(client.config.request_timeout_ms, HEALTH_STEP_MS))
    except SinkError as exc:
        return SinkHealth(False, str(exc))
    try:
        for topic in topics:
            try:
                client.partitions(producer, topic)
            except SinkError as exc:
                return SinkHealth(False, f"topic {topic}: {exc}")
    finally:
        close_quietly(producer, _CLOSE_SECONDS)
    checked = f"metadata ok for {', '.join(topics)}" if topics else ""
    return SinkHealth(True, "; ".join(p for p in (checked, note) if p))
