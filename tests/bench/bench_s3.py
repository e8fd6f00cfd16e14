"""S3 archive drain rate: events through the real dispatcher, SQLite spool and S3 sink
into a local ``moto_server``; reports events/s, objects written, and how much of the
time the sink's ``send`` took (the rest is the dispatcher and the spool).

    PYTHONPATH=. python tests/bench/bench_s3.py [--events 100000] [--repeat 3]

Events (decision / rule / approval, two hours, ~450-byte bodies) are stored first;
the clock runs from the dispatcher's start until every event is confirmed. The sink
runs with its shipped defaults (10,000 events / 64 MiB per batch, gzip level 6),
except a 1 s batch wait so a partial last batch does not wait 300 s.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from receiver.dispatcher import Dispatcher
from receiver.metrics import Metrics
from receiver.store import SQLiteStore
from sinks.s3 import S3Sink, verify_archive
from sinks.s3._client import api_for
from tests.services.moto import MotoServer, run_moto
from tests.sinks.s3_support import keypair, new_event, s3_config


async def fill(store: SQLiteStore, events: int, pad: int) -> None:
    hours = ["2026-11-24T08:10:00Z", "2026-11-24T09:10:00Z"]
    types = ["decision_event.created", "rule.patch_applied", "approval.created"]
    chunk = 2000
    for start in range(0, events, chunk):
        await asyncio.gather(
            *(
                store.ingest(
                    new_event(
                        n,
                        types[n % 3] if n % 10 == 0 else types[0],
                        created_at=hours[(n * len(hours)) // events],
                        pad=pad,
                    )
                )
                for n in range(start, min(events, start + chunk))
            )
        )


def delivered(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value(
        "bighub_siem_sink_delivered_total", {"sink": "archive"}
    )
    return value or 0.0


async def once(moto: MotoServer, bucket: str, events: int, pad: int, gzip_level: int) -> float:
    moto.client().create_bucket(Bucket=bucket)
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "spool.db")
        await store.open()
        await fill(store, events, pad)
        keys = keypair()
        cfg = s3_config(moto, bucket, keys, batch_max_wait_seconds=1.0, gzip_level=gzip_level)
        metrics = Metrics()
        dispatcher = Dispatcher(S3Sink(cfg), cfg, store, metrics, poll_seconds=0.05)
        with structlog.testing.capture_logs() as logs:
            started = time.perf_counter()
            dispatcher.start()
            # Watch the in-memory counter: polling the store would compete with the dispatcher.
            while delivered(metrics) < events:  # noqa: ASYNC110 - a counter has nothing to await
                await asyncio.sleep(0.02)
            elapsed = time.perf_counter() - started
            await dispatcher.stop()
        stats = (await store.stats()).sinks.get("archive")
        await store.close()
    if stats is not None and (stats.pending or stats.dead):
        raise SystemExit(f"not everything delivered: {stats}")
    sending = sum(e["seconds"] for e in logs if e["event"] == "delivery_attempt")
    listed = [
        o
        for page in moto.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    ]
    data = [o for o in listed if o["Key"].endswith(".ndjson.gz")]
    manifests = [o for o in listed if "/_manifests/" in o["Key"]]
    print(
        f"drained {events} events in {elapsed:.2f}s = {events / elapsed:,.0f} events/s "
        f"(sink send {sending:.2f}s = {sending / elapsed:.0%}); {len(data)} objects "
        f"({sum(o['Size'] for o in data) / 2**20:.1f} MiB gzip), {len(manifests)} manifests"
    )
    t1 = time.perf_counter()
    report = verify_archive(api_for(cfg), prefix=cfg.prefix, public_key=keys.private.public_key())
    print(f"  verify-archive: {report.summary()[:60]}... in {time.perf_counter() - t1:.2f}s")
    if not report.ok:
        raise SystemExit("the archive does not verify")
    return events / elapsed


async def run(events: int, pad: int, gzip_level: int, repeat: int) -> None:
    with run_moto() as moto:
        rates = [await once(moto, f"bench-{i}", events, pad, gzip_level) for i in range(repeat)]
    print(f"median {statistics.median(rates):,.0f} events/s over {repeat} run(s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--pad", type=int, default=300, help="extra body bytes per event")
    parser.add_argument("--gzip-level", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.events, args.pad, args.gzip_level, args.repeat))


if __name__ == "__main__":
    main()
