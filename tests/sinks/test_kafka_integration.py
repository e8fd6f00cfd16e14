"""The Kafka sink against a real Kafka-protocol broker (tansu), end to end where it matters.

The outage, oversize and bad-credentials tests run the real service
(``python -m receiver serve``) with signed webhooks in, and assert on the SQLite
store it writes and on what the broker holds.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sqlite3
import subprocess
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from receiver.store import DeadLetter, SQLiteStore, StoreStats
from sinks import PartialDeliveryError, PermanentSinkError
from sinks.base import Event
from sinks.kafka import KafkaConfig, KafkaSink
from tests.harness import ReceiverProcess, base_config, event_body, signed_headers, write_config
from tests.services.tansu import Tansu, tansu, tansu_auth
from tests.sinks.test_kafka import make_event

pytestmark = pytest.mark.integration

CATEGORY_TOPICS = ["bighub.decision", "bighub.rule", "bighub.approval", "bighub.other"]
TYPES = ["decision_event.created", "rule.patch_applied", "approval.created", "webhook.ping"]
PASSWORD = "scram-password-never-logged-42"

# Short timeouts so an outage is noticed within seconds, not minutes.
FAST = {
    "request_timeout_ms": 1500,
    "delivery_timeout_ms": 3000,
    "retry_initial_seconds": 0.2,
    "retry_max_seconds": 1.0,
    "batch_max_wait_seconds": 0.05,
}


@pytest.fixture(autouse=True)
def _collect_refused_sockets() -> Iterator[None]:
    """Reap the sockets kafka-python 3.0 leaves behind on a refused connect, here.

    Its ``sock_connect`` (kafka/net/inet.py) raises without closing the socket; the
    garbage collector closes it later with a ResourceWarning, which pytest would pin
    on whichever test runs then. Collected at the end of the test that caused it.
    """
    yield
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "unclosed <socket.socket", ResourceWarning)
        gc.collect()


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def kafka_sink_table(broker: Tansu, **overrides: Any) -> dict[str, Any]:
    table = {
        "name": "kafka",
        "type": "kafka",
        "bootstrap_servers": [broker.bootstrap],
        "topic": "bighub.{category}",
        "key": "actor",
        **FAST,
    }
    return {**table, **overrides}


def store_view(proc: ReceiverProcess) -> tuple[StoreStats, list[DeadLetter]]:
    """The serve process's spool, read through the store API (a second, shared opener)."""

    async def read() -> tuple[StoreStats, list[DeadLetter]]:
        store = SQLiteStore(proc.tmp / "spool.db")
        await store.open()
        try:
            return await store.stats(), await store.dead_letters()
        finally:
            await store.close()

    return asyncio.run(read())


def pending(proc: ReceiverProcess) -> int:
    stats, _ = store_view(proc)
    return stats.sinks["kafka"].pending if "kafka" in stats.sinks else 0


def outbox_rows(proc: ReceiverProcess) -> list[tuple[str, int, str | None]]:
    """(state, attempts, last_error) of every outbox row, read-only."""
    with sqlite3.connect(f"file:{proc.tmp / 'spool.db'}?mode=ro", uri=True) as db:
        return list(db.execute("SELECT state, attempts, last_error FROM outbox ORDER BY id"))


def post(proc: ReceiverProcess, event_id: str, event_type: str, **payload: Any) -> None:
    body = event_body(event_id, event_type, **payload)
    resp = httpx.post(proc.url, content=body, headers=signed_headers(body), timeout=10)
    assert resp.status_code == 202, resp.text


def post_many(proc: ReceiverProcess, ids: Sequence[int]) -> None:
    for i in ids:
        post(proc, f"evt_{i:04d}", TYPES[i % 4], actor=f"agent:{i % 3}", n=i)


def by_id(records: Sequence[Any]) -> dict[str, Any]:
    return {json.loads(r.value)["event_id"]: r for r in records}


def stderr_events(proc: ReceiverProcess, name: str) -> list[dict[str, Any]]:
    out = []
    for line in proc.stderr_path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == name:
            out.append(entry)
    return out


def assert_key_order(records: Sequence[Any]) -> None:
    """Per topic and key, records sit in one partition, in the order the events came."""
    partitions: dict[tuple[str, bytes], set[int]] = defaultdict(set)
    seen: dict[tuple[str, bytes], list[int]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        partitions[r.topic, r.key].add(r.partition)
        seen[r.topic, r.key].append(json.loads(r.value)["payload"]["n"])
    for key, numbers in seen.items():
        assert len(partitions[key]) == 1, key
        assert numbers == sorted(numbers), (key, numbers)


async def send_all(sink: KafkaSink, batches: Sequence[Sequence[Event]]) -> None:
    await sink.start()
    try:
        for batch in batches:
            await sink.send(batch)
    finally:
        await sink.close()


# -- the sink on its own ------------------------------------------------------------------


def test_every_category_lands_in_its_topic_with_key_headers_and_export_record(
    tansu: Tansu,
) -> None:
    """decision/rule/approval/other each land in bighub.<category>, keyed by actor."""
    events = [make_event(i, TYPES[i % 4], actor=f"agent:{i % 3}", n=i) for i in range(1, 13)]
    sink = KafkaSink(KafkaConfig(name="k", bootstrap_servers=[tansu.bootstrap], key="actor"))
    asyncio.run(send_all(sink, [events]))
    records = by_id(tansu.read(CATEGORY_TOPICS, expect=len(events)))
    assert sorted(records) == sorted(e.event_id for e in events)
    for event in events:
        record = records[event.event_id]
        assert record.topic == f"bighub.{event.category}"
        assert record.key == json.loads(event.body)["actor"].encode()
        assert dict(record.headers) == {
            "event_id": event.event_id.encode(),
            "event_type": event.event_type.encode(),
            "category": event.category.encode(),
            "schema_version": b"1",
            "content-type": b"application/json",
        }
        assert json.loads(record.value) == event.export_record()


def test_per_key_order_holds_across_batches(tansu: Tansu) -> None:
    """Six batches of fifty, five actors: each actor's events stay in order on one partition."""
    events = [make_event(i, actor=f"agent:{i % 5}", n=i) for i in range(300)]
    batches = [events[i : i + 50] for i in range(0, 300, 50)]
    sink = KafkaSink(KafkaConfig(name="k", bootstrap_servers=[tansu.bootstrap], key="actor"))
    asyncio.run(send_all(sink, batches))
    records = tansu.read(["bighub.decision"], expect=300)
    assert len(records) == 300
    assert len({r.partition for r in records}) > 1  # keys really spread over partitions
    assert_key_order(records)


def test_gzip_batches_read_back(tansu: Tansu) -> None:
    """With compression = "gzip" the records read back unchanged."""
    events = [make_event(i, n=i) for i in range(20)]
    cfg = KafkaConfig(
        name="k", bootstrap_servers=[tansu.bootstrap], compression="gzip", topic="audit"
    )
    asyncio.run(send_all(KafkaSink(cfg), [events]))
    records = by_id(tansu.read(["audit"], expect=20))
    assert {k: json.loads(r.value) for k, r in records.items()} == {
        e.event_id: e.export_record() for e in events
    }


def test_oversize_record_fails_alone_at_the_sink(tansu: Tansu) -> None:
    """A record over max_request_size fails its position only; the rest are on the broker."""
    events = [make_event(1, n=1), make_event(2, n=2, blob="x" * 8000), make_event(3, n=3)]
    cfg = KafkaConfig(
        name="k", bootstrap_servers=[tansu.bootstrap], max_request_size=4096, topic="audit"
    )
    sink = KafkaSink(cfg)

    async def go() -> PartialDeliveryError:
        await sink.start()
        try:
            with pytest.raises(PartialDeliveryError) as info:
                await sink.send(events)
            return info.value
        finally:
            await sink.close()

    error = asyncio.run(go())
    assert list(error.failures) == [1]
    assert isinstance(error.failures[1], PermanentSinkError)
    assert "MessageSizeTooLarge" in str(error.failures[1])
    assert sorted(by_id(tansu.read(["audit"], expect=2))) == ["evt_1", "evt_3"]


def test_health_creates_no_topic_and_notices_a_dead_broker(tansu: Tansu) -> None:
    """health() describes the routed topics without creating them (tansu, like brokers
    with auto-create on, creates a topic a producer asks metadata for); once the sink
    sent to a topic it is reported present; a dead broker is named."""
    cfg = KafkaConfig(
        name="k",
        bootstrap_servers=[tansu.bootstrap],
        request_timeout_ms=1500,
        delivery_timeout_ms=3000,
    )
    sink = KafkaSink(cfg)
    health = asyncio.run(sink.health())
    assert health.ok, health.detail
    assert (
        "not created yet: bighub.approval, bighub.decision, bighub.other, bighub.rule"
        in health.detail
    )
    assert tansu.topics() == set()
    asyncio.run(send_all(sink, [[make_event(1, n=1)]]))
    health = asyncio.run(KafkaSink(cfg).health())
    assert "metadata ok for bighub.decision" in health.detail
    assert tansu.topics() == {"bighub.decision"}
    tansu.stop()
    down = asyncio.run(sink.health())
    assert not down.ok
    assert "no bootstrap server accepts connections" in down.detail


# -- through the real service ----------------------------------------------------------------


def test_broker_outage_keeps_events_in_the_outbox_and_loses_none(
    tansu: Tansu, tmp_path: Path
) -> None:
    """Broker killed mid-stream: events wait uncharged, none dead-lettered; all land after restart."""
    # max_attempts = 3: had the outage been charged, these events would be dead letters.
    cfg = base_config(tmp_path, sinks=[kafka_sink_table(tansu, max_attempts=3)])
    with ReceiverProcess(tmp_path, cfg) as proc:
        post_many(proc, range(0, 20))
        wait_until(lambda: pending(proc) == 0, 20, "the first 20 events delivered")
        before = by_id(tansu.read(CATEGORY_TOPICS, expect=20))
        assert sorted(before) == [f"evt_{i:04d}" for i in range(0, 20)]

        tansu.kill()  # SIGKILL: the broker and everything it held in memory is gone
        post_many(proc, range(20, 40))  # ingress never waits for a sink: all 202
        wait_until(
            lambda: (
                len(
                    [
                        e
                        for e in stderr_events(proc, "delivery_attempt")
                        if e["outcome"] == "SinkUnavailableError"
                    ]
                )
                >= 4
            ),
            40,
            "four failed delivery attempts during the outage",
        )
        rows = outbox_rows(proc)
        waiting = [r for r in rows if r[0] == "pending"]
        assert len(waiting) == 20
        assert all(attempts == 0 for _, attempts, _ in waiting)  # never charged
        assert all((err or "").startswith("unavailable:") for _, _, err in waiting)
        ready = httpx.get(f"{proc.base_url}/readyz", timeout=5).json()
        assert ready["sinks"]["kafka"]["up"] is False
        _, dead = store_view(proc)
        assert dead == []

        tansu.start()  # same port, empty broker
        wait_until(lambda: pending(proc) == 0, 30, "the backlog delivered after the restart")
        after = tansu.read(CATEGORY_TOPICS, expect=20)
        stats, dead = store_view(proc)

    assert dead == []
    assert "kafka" not in stats.sinks or stats.sinks["kafka"].dead == 0
    delivered = set(before) | set(by_id(after))
    assert delivered == {f"evt_{i:04d}" for i in range(0, 40)}
    assert {f"evt_{i:04d}" for i in range(20, 40)} <= set(by_id(after))
    assert_key_order(after)


def test_oversize_event_alone_is_dead_lettered(tansu: Tansu, tmp_path: Path) -> None:
    """Through the service: the big event is a dead letter, its neighbours are on the broker."""
    sink = kafka_sink_table(tansu, max_request_size=4096, batch_max_wait_seconds=0.3)
    with ReceiverProcess(tmp_path, base_config(tmp_path, sinks=[sink])) as proc:
        for i in range(5):
            extra = {"blob": "x" * 10_000} if i == 2 else {}
            post(proc, f"evt_{i}", "decision_event.created", actor="agent:a", n=i, **extra)
        wait_until(lambda: pending(proc) == 0, 20, "every event delivered or dead-lettered")
        _, dead = store_view(proc)
        records = by_id(tansu.read(["bighub.decision"], expect=4))
    assert [d.event_id for d in dead] == ["evt_2"]
    assert "MessageSizeTooLarge" in dead[0].error
    assert sorted(records) == ["evt_0", "evt_1", "evt_3", "evt_4"]


def test_bad_sasl_settings_are_refused_by_check_config(tmp_path: Path) -> None:
    """check-config names the missing SASL key and exits 2, without a traceback."""
    sink = {
        "name": "kafka",
        "type": "kafka",
        "bootstrap_servers": ["127.0.0.1:9092"],
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "bighub",
    }
    path = write_config(tmp_path / "c.toml", base_config(tmp_path, sinks=[sink]))
    result = subprocess.run(
        [sys.executable, "-m", "receiver", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "sinks.0.sasl_password: Value error, required when security_protocol is SASL_SSL" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_wrong_sasl_credentials_keep_the_service_up_and_events_waiting(
    tansu_auth: Tansu, tmp_path: Path
) -> None:
    """The broker refuses our login: the sink is reported down with a clear reason, no crash."""
    sink = kafka_sink_table(
        tansu_auth,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="bighub",
        sasl_password="env:KAFKA_PASSWORD",
        max_attempts=1,
    )
    cfg = base_config(tmp_path, sinks=[sink])
    env = {"KAFKA_PASSWORD": PASSWORD}
    path = write_config(tmp_path / "c.toml", cfg)
    check = subprocess.run(
        [sys.executable, "-m", "receiver", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env},
    )
    assert check.returncode == 0, check.stderr  # consistent settings; only the broker can refuse
    with ReceiverProcess(tmp_path, cfg, env=env) as proc:
        post_many(proc, range(3))

        def sink_state() -> dict[str, Any] | None:
            state: dict[str, Any] = httpx.get(f"{proc.admin_url}/readyz", timeout=5).json()
            kafka = state["sinks"]["kafka"]
            return kafka if "SASL" in kafka["detail"] else None

        # Named after the first short bootstrap attempt, not after request_timeout_ms.
        state = wait_until(sink_state, 10, "the sink reported down naming SASL")
        assert state["up"] is False
        assert "SASL authentication failed (SCRAM-SHA-512)" in state["detail"]
        assert "check sasl_username / sasl_password" in state["detail"]
        # Several refused start attempts later: still alive, still holding the events.
        wait_until(
            lambda: len(stderr_events(proc, "kafka_start_failed")) >= 3, 30, "three start attempts"
        )
        assert proc.proc is not None
        assert proc.proc.poll() is None
        stats, dead = store_view(proc)
        assert stats.sinks["kafka"].pending == 3
        assert dead == []
    stderr = proc.stderr_path.read_text()
    assert PASSWORD not in stderr
    assert "kafka.net" not in stderr  # kafka-python's own lines stay at debug
