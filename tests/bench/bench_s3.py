"""S3 archive drain rate: events through the real dispatcher, SQLite spool and S3 sink
into a local ``moto_server``; reports events/s and objects written.

    PYTHONPATH=. python tests/bench/bench_s3.py [--events 100000] [--pad 300]

Events are stored first; the clock runs from the dispatcher's start until the outbox
is empty. The sink runs with its shipped defaults (10,000 events / 64 MiB per batch),
except a 1 s batch wait so a partial last batch does not wait 300 s.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from receiver.dispatcher import Dispatcher
from receiver.metrics import Metrics
from receiver.store import SQLiteStore
from sinks.s3 import S3Sink, verify_archive
from sinks.s3.sink import api_for
from tests.services.moto import run_moto
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


async def run(events: int, pad: int, gzip_level: int) -> None:
    with run_moto() as moto, tempfile.TemporaryDirectory() as tmp:
        bucket = "bench-archive"
        moto.client().create_bucket(Bucket=bucket)
        store = SQLiteStore(Path(tmp) / "spool.db")
        await store.open()
        t0 = time.perf_counter()
        await fill(store, events, pad)
        print(f"stored {events} events in {time.perf_counter() - t0:.1f}s")
        keys = keypair()
        cfg = s3_config(moto, bucket, keys, batch_max_wait_seconds=1.0, gzip_level=gzip_level)
        metrics = Metrics()
        dispatcher = Dispatcher(S3Sink(cfg), cfg, store, metrics, poll_seconds=0.05)
        started = time.perf_counter()
        dispatcher.start()
        # Watch the in-memory counter: polling the store would compete with the dispatcher.
        while delivered(metrics) < events:  # noqa: ASYNC110 - a counter has nothing to await
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
        stats = await store.stats()
        if stats.sinks.get("archive") and (
            stats.sinks["archive"].pending or stats.sinks["archive"].dead
        ):
            raise SystemExit(f"not everything delivered: {stats.sinks['archive']}")
        await dispatcher.stop()
        await store.close()
        client = moto.client()
        listed = [
            o
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])
        ]
        data = [o for o in listed if o["Key"].endswith(".ndjson.gz")]
        manifests = [o for o in listed if "/_manifests/" in o["Key"]]
        print(
            f"drained {events} events in {elapsed:.2f}s = {events / elapsed:,.0f} events/s; "
            f"{len(data)} objects ({sum(o['Size'] for o in data) / 2**20:.1f} MiB gzip), "
            f"{len(manifests)} manifests"
        )
        t1 = time.perf_counter()
        report = verify_archive(
            api_for(cfg), prefix=cfg.prefix, public_key=keys.private.public_key()
        )
        print(f"verify-archive: {report.summary()} in {time.perf_counter() - t1:.2f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--pad", type=int, default=300, help="extra body bytes per event")
    parser.add_argument("--gzip-level", type=int, default=6)
    args = parser.parse_args()
    asyncio.run(run(args.events, args.pad, args.gzip_level))


if __name__ == "__main__":
    main()
