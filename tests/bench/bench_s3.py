"""S3: the archive sink against boto3 alone, into a local ``moto_server``, in one run.

Modes (see ``_compare``), interleaved over ``--rounds`` rounds, batches of ``--batch``
(the sink's default 10,000), each mode into its own fresh bucket:

- ``bare``: a boto3 client PUTting the very data objects the sink writes (encoded and
  gzipped before the clock starts), conditional, with their SHA-256 and SSE, as the
  sink sends them;
- ``bare+encode``: the same, but the objects are encoded and gzipped inside the clock,
  one after the other on this thread: the archive format's own cost plus the client;
- ``send``: ``S3Sink.send()`` on the events: archive lines, gzip, the conditional PUTs,
  one partition listing at first touch, and the signed manifest after each batch;
- ``drain``: ``Store.ingest`` then the real ``Dispatcher`` through an ``S3Sink``.

Events: decision / rule / approval over two hours, so about three objects per batch.
``verify-archive`` runs over each ``send`` and ``drain`` bucket and must be clean.
The encoding (lines + gzip) is also timed alone.

    PYTHONPATH=. python tests/bench/bench_s3.py [--events 100000] [--batch 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sinks import Event  # noqa: E402
from sinks.s3 import S3Config, S3Sink, verify_archive  # noqa: E402
from sinks.s3._client import api_for, object_params, sha256_b64  # noqa: E402
from sinks.s3.encoder import ArchiveObject, encode_object, split_by_partition  # noqa: E402
from tests.bench._compare import (  # noqa: E402
    Sample,
    drain,
    machine,
    report,
    run_rounds,
    timed,
    timed_send,
)
from tests.services.moto import MotoServer, run_moto  # noqa: E402
from tests.sinks.s3_support import keypair, make_event, s3_config  # noqa: E402

KEYS = keypair()
HOURS = ["2026-11-24T08:10:00.000+00:00", "2026-11-24T09:10:00.000+00:00"]
TYPES = ["decision_event.created", "rule.patch_applied", "approval.created"]


def events(n: int, pad: int) -> list[Event]:
    return [
        make_event(
            i + 1,
            TYPES[i % 3] if i % 10 == 0 else TYPES[0],
            HOURS[(i * len(HOURS)) // n],
            pad="x" * pad,
        )
        for i in range(n)
    ]


def config(moto: MotoServer, bucket: str, args: argparse.Namespace) -> S3Config:
    moto.client().create_bucket(Bucket=bucket)
    return s3_config(
        moto,
        bucket,
        KEYS,
        batch_max_events=args.batch,
        batch_max_wait_seconds=0.5,
        gzip_level=args.gzip_level,
    )


def objects(cfg: S3Config, evs: list[Event]) -> list[ArchiveObject]:
    out = []
    for start in range(0, len(evs), cfg.batch_max_events):
        batch = evs[start : start + cfg.batch_max_events]
        for partition, positions in split_by_partition(batch).items():
            out.append(
                encode_object(
                    cfg.key_prefix(),
                    partition,
                    [batch[p] for p in positions],
                    level=cfg.gzip_level,
                )
            )
    return out


def bare(cfg: S3Config, prepared: list[ArchiveObject]) -> Any:
    client: Any = api_for(cfg)._s3  # the boto3 client the sink would use, alone

    async def run() -> None:
        for obj in prepared:
            client.put_object(
                Bucket=cfg.bucket,
                Key=obj.key,
                Body=obj.data,
                IfNoneMatch="*",
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=sha256_b64(obj.data),
                **object_params(cfg, kind="data", now=time.time()),
            )

    return run


async def one(
    mode: str, rnd: int, moto: MotoServer, tmp: Path, args: argparse.Namespace
) -> tuple[Sample, S3Config]:
    cfg = config(moto, f"bench-{mode.replace('+', '-')}-{rnd}-{uuid.uuid4().hex[:8]}", args)
    evs = events(args.events, args.pad)
    if mode == "bare":
        prepared = objects(cfg, evs)
        return await timed(mode, rnd, len(evs), bare(cfg, prepared)), cfg
    if mode == "bare+encode":

        async def encode_and_put() -> None:
            await bare(cfg, objects(cfg, evs))()

        return await timed(mode, rnd, len(evs), encode_and_put), cfg
    sink = S3Sink(cfg)
    await sink.start()
    if mode == "send":
        return await timed_send(rnd, sink, evs, args.batch), cfg
    wall, cpu = await drain(sink, cfg, tmp / f"{mode}-{rnd}.db", evs)
    return Sample(mode, rnd, len(evs), wall, cpu), cfg


def encode_cost(args: argparse.Namespace, moto: MotoServer) -> float:
    cfg = config(moto, f"bench-enc-{uuid.uuid4().hex[:8]}", args)
    evs = events(args.events, args.pad)
    cpu = time.process_time()
    objects(cfg, evs)
    return (time.process_time() - cpu) / len(evs) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pad", type=int, default=150, help="extra body bytes per event")
    parser.add_argument("--gzip-level", type=int, default=6)
    parser.add_argument("--modes", default="bare,bare+encode,send,drain")
    args = parser.parse_args()
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    print(
        f"# S3: {machine()}; {args.events} events per run, batch {args.batch},"
        f" gzip level {args.gzip_level}"
    )
    failed = False
    with run_moto() as moto, tempfile.TemporaryDirectory(prefix="bench-s3-") as d:

        def run(mode: str, rnd: int) -> tuple[Sample, str]:
            nonlocal failed
            sample, cfg = asyncio.run(one(mode, rnd, moto, Path(d), args))
            if mode.startswith("bare"):
                return sample, ""
            found = verify_archive(
                api_for(cfg), prefix=cfg.prefix, public_key=KEYS.private.public_key()
            )
            failed |= not found.ok
            return sample, ", verify-archive " + ("clean" if found.ok else "FAILED")

        samples = run_rounds(args.modes.split(","), args.rounds, run)
        encoded = encode_cost(args, moto)
    print()
    print(
        report(f"S3, batch {args.batch}, gzip level {args.gzip_level}", samples, also="bare+encode")
    )
    print(f"\nencoding alone (lines + gzip): {encoded:.1f} CPU µs/event; {machine()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
