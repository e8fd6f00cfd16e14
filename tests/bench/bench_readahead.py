"""Dispatcher read-ahead on and off, interleaved: a backlog drained through a sink whose
every call takes a fixed time (what a destination across a network costs), so the store
read of the next batch either waits for the send or runs beside it.

    PYTHONPATH=. .venv/bin/python tests/bench/bench_readahead.py [--events 30000]
        [--batch 1000] [--latency-ms 0,5,20] [--rounds 3]

Per latency and mode: median events/s and CPU µs per event of this process over the
rounds, and the ratio on / off within each round. The sink does no work of its own, so
the CPU figure is the store and the dispatcher.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sinks import Event, SinkConfig, SinkHealth  # noqa: E402
from tests.bench._compare import Sample, drain, machine, run_rounds  # noqa: E402
from tests.sinks.s3_support import make_event  # noqa: E402


class LatencyConfig(SinkConfig):
    type: str = "latency"


class LatencySink:
    """Takes ``latency`` seconds per call and keeps nothing."""

    config_model: ClassVar[type[SinkConfig]] = LatencyConfig

    def __init__(self, latency: float) -> None:
        self.latency = latency

    async def start(self) -> None:
        return None

    async def send(self, batch: Sequence[Event]) -> None:
        await asyncio.sleep(self.latency)

    async def health(self) -> SinkHealth:
        return SinkHealth(True)

    async def close(self) -> None:
        return None


def events(n: int, tag: str) -> list[Event]:
    now = time.time()
    return [make_event(i, received_at=now, actor="agent:bench", tag=tag) for i in range(n)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--latency-ms", default="0,5,20")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    latencies = [float(x) for x in args.latency_ms.split(",")]
    modes = [f"{m}-{lat:g}ms" for lat in latencies for m in ("off", "on")]
    print(f"# read-ahead: {machine()}; {args.events} events, batch {args.batch}")
    with tempfile.TemporaryDirectory(prefix="bench-readahead-") as d:

        def run(mode: str, rnd: int) -> tuple[Sample, str]:
            on, lat = mode.startswith("on"), float(mode.split("-")[1][:-2]) / 1000
            cfg = LatencyConfig(name="lat", batch_max_events=args.batch, batch_max_wait_seconds=0)
            evs = events(args.events, f"r{rnd}{mode}")
            spool = Path(d) / f"{mode}-{rnd}.db"
            wall, cpu = asyncio.run(drain(LatencySink(lat), cfg, spool, evs, read_ahead=on))
            return Sample(mode, rnd, len(evs), wall, cpu), ""

        samples = run_rounds(modes, args.rounds, run)
    print("\n| latency per call | read-ahead | events/s (median) | CPU µs/event | on / off |")
    print("|---:|---|---:|---:|---:|")
    for lat in latencies:
        for m in ("off", "on"):
            mine = [s for s in samples if s.mode == f"{m}-{lat:g}ms"]
            ratios = [
                s.rate
                / next(o.rate for o in samples if o.mode == f"off-{lat:g}ms" and o.round == s.round)
                for s in mine
            ]
            print(
                f"| {lat:g} ms | {m} | {statistics.median(s.rate for s in mine):,.0f}"
                f" | {statistics.median(s.cpu_us for s in mine):.1f}"
                f" | {statistics.median(ratios):.2f} |"
            )
    print(f"\n{machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
