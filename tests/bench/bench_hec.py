"""Splunk HEC: the sink against httpx alone, into the HEC emulator, in one run.

Modes (see ``_compare``), interleaved over ``--rounds`` rounds, batches of ``--batch``:

- ``bare``: one ``httpx.AsyncClient`` posting the very request bodies the sink posts
  (HEC event objects encoded, cut into the sink's pieces and requests and gzipped
  before the clock starts), one after another, checking each answer (and with
  ``--ack`` polling the ackIds);
- ``send``: ``SplunkHecSink.send()`` on the events: encoding, gzip, POST, answer
  handling (and with ``--ack`` the ack polling and its state file);
- ``drain``: ``Store.ingest`` then the real ``Dispatcher`` through a ``SplunkHecSink``.

The emulator runs as its own process (``python -m tests.fakes.hec``), so it does not share
this process's GIL or its CPU figure. ``--encode`` prints the encoder's cost alone.

    PYTHONPATH=. python tests/bench/bench_hec.py [--events 30000] [--batch 1000] [--ack] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sinks import Event  # noqa: E402
from sinks.splunk_hec import SplunkHecConfig, SplunkHecSink  # noqa: E402
from sinks.splunk_hec.encoder import (  # noqa: E402
    Encoder,
    gzip_body,
    plan_pieces,
    plan_requests,
)
from tests.bench._compare import (  # noqa: E402
    Sample,
    drain,
    machine,
    report,
    run_rounds,
    timed,
    timed_send,
)
from tests.fakes.hec import TOKEN, make_event  # noqa: E402
from tests.harness import free_port  # noqa: E402


class Emulator:
    """``python -m tests.fakes.hec`` in a subprocess."""

    def __init__(self, ack: bool) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "tests.fakes.hec", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*args, "--ack"] if ack else args,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{self.url}/services/collector/health", timeout=1)
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("emulator did not start") from None
                time.sleep(0.05)

    def indexed(self) -> int:
        return int(httpx.get(f"{self.url}/_emulator/stats", timeout=5).json()["indexed"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def config(url: str, tmp: Path, args: argparse.Namespace) -> SplunkHecConfig:
    return SplunkHecConfig(
        name="hec",
        url=url,
        token=TOKEN,
        compression="gzip" if args.gzip else "none",
        ack=args.ack,
        ack_poll_interval_seconds=0.05,
        ack_state_path=tmp / f"ack-{uuid.uuid4().hex}.json",
        batch_max_events=args.batch,
        batch_max_wait_seconds=0,
    )


def events(n: int, tag: str) -> list[Event]:
    """Decision events with the payload fields the sink indexes by default."""
    return [
        make_event(
            i,
            occurred_at=None,
            received_at=time.time(),
            actor=f"agent:{i % 50}",
            domain="payments",
            decision="blocked",
            risk_score=0.91,
            action={"tool": "refund_payment", "amount": 1250, "currency": "EUR"},
            rule_id="rule_refund_limit",
            tag=tag,
        )
        for i in range(n)
    ]


def bodies(cfg: SplunkHecConfig, evs: Sequence[Event]) -> list[list[bytes]]:
    """Per batch, the request bodies the sink posts: its pieces (``plan_pieces``), each
    cut by ``max_request_bytes``, gzipped when configured."""
    encoder = Encoder.from_config(cfg)
    out = []
    for start in range(0, len(evs), cfg.batch_max_events):
        objects = encoder.events(evs[start : start + cfg.batch_max_events])
        sizes = [len(o) for o in objects]
        raw = [
            b"".join(objects[i] for i in plan)
            for piece in plan_pieces(range(len(objects)))
            for plan in plan_requests(sizes, piece, cfg.max_request_bytes)
        ]
        out.append([gzip_body(b) for b in raw] if cfg.compression == "gzip" else raw)
    return out


async def bare(cfg: SplunkHecConfig, batches: list[list[bytes]]) -> None:
    headers = {"Authorization": f"Splunk {TOKEN}", "Content-Type": "application/json"}
    if cfg.compression == "gzip":
        headers["Content-Encoding"] = "gzip"
    channel = str(uuid.uuid4())
    if cfg.ack:
        headers["X-Splunk-Request-Channel"] = channel
    async with httpx.AsyncClient(base_url=cfg.url, headers=headers, timeout=30) as client:
        for requests in batches:
            ack_ids = []
            for body in requests:
                answer = await client.post("/services/collector/event", content=body)
                if answer.status_code != 200:
                    raise SystemExit(f"bare client: HTTP {answer.status_code} {answer.text}")
                if cfg.ack:
                    ack_ids.append(answer.json()["ackId"])
            while ack_ids:
                status = await client.post(
                    "/services/collector/ack", params={"channel": channel}, json={"acks": ack_ids}
                )
                acks = status.json()["acks"]
                ack_ids = [a for a in ack_ids if not acks.get(str(a))]
                if ack_ids:
                    await asyncio.sleep(0.01)


async def one(mode: str, rnd: int, url: str, tmp: Path, args: argparse.Namespace) -> Sample:
    cfg = config(url, tmp, args)
    evs = events(args.events, f"r{rnd}{mode}")
    if mode == "bare":
        prepared = bodies(cfg, evs)
        return await timed(mode, rnd, len(evs), lambda: bare(cfg, prepared))
    sink = SplunkHecSink(cfg)
    await sink.start()
    if mode == "send":
        return await timed_send(rnd, sink, evs, args.batch)
    wall, cpu = await drain(sink, cfg, tmp / f"r{rnd}.db", evs)
    return Sample(mode, rnd, len(evs), wall, cpu)


def encode_cost(args: argparse.Namespace, tmp: Path) -> tuple[float, float]:
    """CPU µs/event of the encoder alone, and of gzip (the configured level) alone."""
    cfg = config("https://127.0.0.1:1", tmp, args)
    evs = events(args.events, "enc")
    encoder = Encoder.from_config(cfg)
    cpu = time.process_time()
    objects = encoder.events(evs)
    encoded = time.process_time() - cpu
    cpu = time.process_time()
    gzip_body(b"".join(objects))
    zipped = time.process_time() - cpu
    return encoded / len(evs) * 1e6, zipped / len(evs) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ack", action="store_true", help="indexer acknowledgement on")
    parser.add_argument("--no-gzip", dest="gzip", action="store_false")
    parser.add_argument("--modes", default="bare,send,drain")
    args = parser.parse_args()
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    print(
        f"# Splunk HEC: {machine()}; {args.events} events per run, batch {args.batch},"
        f" gzip {'on' if args.gzip else 'off'}, ack {'on' if args.ack else 'off'}"
    )
    emulator = Emulator(args.ack)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-hec-") as d:
            tmp = Path(d)

            def run(mode: str, rnd: int) -> tuple[Sample, str]:
                before = emulator.indexed()
                sample = asyncio.run(one(mode, rnd, emulator.url, tmp, args))
                return sample, f", {emulator.indexed() - before} indexed"

            samples = run_rounds(args.modes.split(","), args.rounds, run)
            encoded, zipped = encode_cost(args, tmp)
    finally:
        emulator.stop()
    print()
    title = f"Splunk HEC, batch {args.batch}, gzip {'on' if args.gzip else 'off'}, ack {'on' if args.ack else 'off'}"
    print(report(title, samples))
    print(
        f"\nencoding alone: {encoded:.1f} CPU µs/event; gzip alone: {zipped:.1f} CPU µs/event;"
        f" {machine()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
