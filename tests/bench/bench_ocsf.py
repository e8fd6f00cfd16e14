"""OCSF mapping cost per event, and the Security Lake drain rate against plain boto3 PUTs.

    PYTHONPATH=. python tests/bench/bench_ocsf.py [--events 20000] [--batch 5000] [--rounds 3]

1. Mapping: the same events (80 % decisions, 10 % approvals, 10 % rule changes,
   ~450-byte bodies) encoded as the export record (baseline), as OCSF 1.1.0 and
   1.8.0 JSON, and as OCSF 1.1.0 Parquet rows. CPU microseconds per event (process
   time), variants interleaved in every round; the median round is reported.
2. Drain: ``SecurityLakeSink.send`` over the events in batches (map, Parquet, list the
   partition, conditional PUT, manifest; through STS credentials) into a local
   ``moto_server``, against boto3 ``put_object`` of the very same Parquet bytes, timed two
   ways: the bytes encoded beforehand (the PUTs alone), and encoded inside the clock by
   the same ``ParquetFormat`` (a naive writer: no listing, no conditional write, no
   manifest). Fresh bucket per run; the three interleaved per round. Events/s (wall),
   the sink's CPU µs per event, and the ratios sink / boto3.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sinks import Event
from sinks.ocsf import CloudContext, Mapper, OcsfMapping, class_of
from sinks.security_lake import SecurityLakeConfig, SecurityLakeSink
from sinks.security_lake._arrow import RowShape, schema_for
from sinks.security_lake.encoder import ParquetFormat
from tests.services.moto import REGION, MotoServer, run_moto
from tests.sinks.lake_support import ACCOUNT, lake_values
from tests.sinks.s3_support import keypair

OCCURRED = "2026-11-24T08:15:00.000+00:00"


def make_events(count: int, first_seq: int = 1) -> list[Event]:
    events = []
    for i in range(count):
        n = first_seq + i
        kind = (
            ("approval.created", "rule.patch_applied")[n % 2]
            if n % 10 == 0
            else ("decision_event.created")
        )
        body = {
            "event_id": f"evt_{n:08d}",
            "event_type": kind,
            "created_at": "2026-11-24T08:15:00Z",
            "decision": ("allowed", "blocked", "requires_approval")[n % 3],
            "risk_score": (n % 100) / 100,
            "actor": f"agent:bot-{n % 17}",
            "domain": "payments",
            "action": {"tool": "refund_payment", "amount": n % 5000, "currency": "EUR"},
            "rule_id": f"rule_{n % 23}",
            "reason": "amount above the configured refund limit for this agent",
            "request_id": f"req_{n:08d}",
            "patch": {"max_amount": 1000},
            "context": {"session": uuid.UUID(int=n).hex, "channel": "chat"},
        }
        events.append(
            Event(
                seq=n,
                event_id=f"evt_{n:08d}",
                id_origin="body.event_id",
                event_type=kind,
                category={"decision_event": "decision", "approval": "approval", "rule": "rule"}[
                    kind.split(".")[0]
                ],
                occurred_at=OCCURRED,
                received_at=1_795_500_000.0 + n,
                source="bighub",
                delivery_id=None,
                body=json.dumps(body, separators=(",", ":")).encode(),
            )
        )
    return events


# -- 1. mapping -------------------------------------------------------------------------


def mapping(events: list[Event], rounds: int) -> None:
    m11 = Mapper(OcsfMapping(), "1.1.0", cloud=CloudContext(REGION, ACCOUNT))
    m18 = Mapper(OcsfMapping(), "1.8.0")

    shapes = {
        c: RowShape(schema_for(class_of(c), "1.1.0")) for c in ("decision", "approval", "rule")
    }

    def parquet_rows(e: Event) -> object:
        return shapes[e.category](m11.map(e).record)

    variants: dict[str, Callable[[Event], object]] = {
        "export record (baseline)": lambda e: e.export_json(),
        "OCSF 1.1.0 JSON": lambda e: m11.map(e).json(),
        "OCSF 1.8.0 JSON": lambda e: m18.map(e).json(),
        "OCSF 1.1.0 Parquet row": parquet_rows,
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            started = time.process_time()
            for event in events:
                fn(event)
            results[name].append((time.process_time() - started) / len(events) * 1e6)
    base = statistics.median(results["export record (baseline)"])
    print(f"\nmapping, {len(events)} events, median of {rounds} interleaved rounds:")
    print(f"  {'variant':28} {'CPU µs/event':>13} {'vs export':>10}")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"  {name:28} {median:13.1f} {median / base:9.1f}x")


# -- 2. drain ---------------------------------------------------------------------------


async def sink_run(moto: MotoServer, events: list[Event], batch: int) -> tuple[float, float]:
    bucket = f"lake-{uuid.uuid4().hex[:16]}"
    moto.client().create_bucket(Bucket=bucket)
    cfg = SecurityLakeConfig.model_validate(lake_values(moto, bucket, keypair()))
    sink = SecurityLakeSink(cfg)
    await sink.start()
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(events), batch):
        await sink.send(events[start : start + batch])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await sink.close()
    return wall, cpu


def encode_all(events: list[Event], batch: int) -> list[tuple[str, bytes]]:
    """The Parquet objects the sink writes for ``events`` in batches of ``batch``."""
    mapper = Mapper(OcsfMapping(), "1.1.0", cloud=CloudContext(REGION, ACCOUNT))
    formats: dict[str, ParquetFormat] = {}
    objects: list[tuple[str, bytes]] = []
    for start in range(0, len(events), batch):
        chunk = events[start : start + batch]
        by_class: dict[str, list[Event]] = {}
        for e in chunk:
            by_class.setdefault(class_of(e.category).name, []).append(e)
        for name, group in by_class.items():
            if name not in formats:
                event_class = class_of(group[0].category)
                formats[name] = ParquetFormat(mapper, event_class, region=REGION, account=ACCOUNT)
            fmt = formats[name]
            for partition, positions in fmt.split(group):
                obj = fmt.encode(f"ext/{name}/", partition, [group[p] for p in positions])
                objects.append((obj.key, obj.data))
    return objects


def boto3_run(
    moto: MotoServer, events: list[Event], batch: int, *, encode_inside: bool
) -> tuple[float, int]:
    """PUT the same Parquet objects the sink writes, encoded before or inside the clock."""
    bucket = f"put-{uuid.uuid4().hex[:16]}"
    client = moto.client()
    client.create_bucket(Bucket=bucket)
    objects = [] if encode_inside else encode_all(events, batch)
    started = time.perf_counter()
    if encode_inside:
        objects = encode_all(events, batch)
    for key, data in objects:
        client.put_object(Bucket=bucket, Key=key, Body=data)
    return time.perf_counter() - started, sum(len(d) for _, d in objects)


def drain(events: list[Event], batch: int, rounds: int) -> None:
    rates: dict[str, list[float]] = {"sink": [], "put": [], "encode+put": []}
    sink_cpu: list[float] = []
    size = 0
    with run_moto() as moto, structlog.testing.capture_logs():
        boto3_run(moto, events[:batch], batch, encode_inside=True)  # warm every path once
        asyncio.run(sink_run(moto, events[:batch], batch))
        for _ in range(rounds):
            wall, cpu = asyncio.run(sink_run(moto, events, batch))
            rates["sink"].append(len(events) / wall)
            sink_cpu.append(cpu / len(events) * 1e6)
            put_wall, size = boto3_run(moto, events, batch, encode_inside=False)
            rates["put"].append(len(events) / put_wall)
            naive_wall, _ = boto3_run(moto, events, batch, encode_inside=True)
            rates["encode+put"].append(len(events) / naive_wall)
    print(
        f"\nSecurity Lake drain, {len(events)} events in batches of {batch} "
        f"({size / 1e6:.1f} MB of Parquet), {rounds} interleaved rounds (medians):"
    )
    print(
        f"  sink.send                      {statistics.median(rates['sink']):9.0f} events/s "
        f"(CPU {statistics.median(sink_cpu):.0f} µs/event in this process)"
    )
    print(f"  boto3 put_object, pre-encoded  {statistics.median(rates['put']):9.0f} events/s")
    print(
        f"  same encoder + boto3 put       {statistics.median(rates['encode+put']):9.0f} events/s"
    )
    for name in ("put", "encode+put"):
        ratios = [s / o for s, o in zip(rates["sink"], rates[name], strict=True)]
        print(
            f"  ratio sink / {name:17} {statistics.median(ratios):5.2f} "
            f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
        )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=5_000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    events = make_events(args.events)
    mapping(events, args.rounds)
    drain(events, args.batch, args.rounds)


if __name__ == "__main__":
    main()
