"""Drain rate of the Splunk HEC sink into the HEC emulator (events/s).

Figures per variant (gzip on/off x ack on/off):

- ``drain``: a SQLite outbox pre-filled with N events, drained by the real dispatcher
  through the sink into the emulator, timed from dispatcher start to "0 pending";
- ``drain/cpu``: the same events divided by the CPU seconds this process (dispatcher,
  store threads, sink) used meanwhile: what one free core would do, whatever the load;
- ``sink``: the sink's ``send`` alone in a loop (encode, gzip, POST, ack), no store.

The emulator runs as its own process so it does not share this process's GIL.

    PYTHONPATH=. python tests/bench/bench_hec.py [--events 30000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from receiver.service import Service  # noqa: E402
from receiver.settings import load_settings  # noqa: E402
from receiver.store import NewEvent  # noqa: E402
from sinks.splunk_hec import SplunkHecConfig, SplunkHecSink  # noqa: E402
from tests.fakes.hec import TOKEN, make_event  # noqa: E402
from tests.harness import base_config, event_body, free_port  # noqa: E402


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


def sink_settings(url: str, tmp: Path, *, gzip: bool, ack: bool, batch: int) -> dict[str, Any]:
    return {
        "name": "hec",
        "type": "splunk_hec",
        "url": url,
        "token": TOKEN,
        "compression": "gzip" if gzip else "none",
        "ack": ack,
        "ack_poll_interval_seconds": 0.05,
        "ack_state_path": str(tmp / "ack.json"),
        "batch_max_events": batch,
        "batch_max_wait_seconds": 0,
    }


async def fill(service: Service, n: int) -> None:
    """Store n events routed to the sink (concurrent ingests share commits)."""

    async def one(i: int) -> None:
        body = event_body(
            f"evt-{i}", actor=f"agent:{i % 50}", domain="payments", decision="blocked"
        )
        await service.store.ingest(
            NewEvent(
                source="bighub",
                event_id=f"evt-{i}",
                id_origin="body.event_id",
                event_type="decision_event.created",
                category="decision",
                occurred_at="2026-11-24T08:00:00.000+00:00",
                received_at=time.time(),
                delivery_id=None,
                body=body,
                signature=None,
                timestamp=None,
                sinks=("hec",),
            )
        )

    for start in range(0, n, 2000):
        await asyncio.gather(*(one(i) for i in range(start, min(n, start + 2000))))


async def drain(
    emulator: Emulator, n: int, *, gzip: bool, ack: bool, batch: int
) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds to drain n stored events."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sink = sink_settings(emulator.url, tmp, gzip=gzip, ack=ack, batch=batch)
        cfg = base_config(tmp, sinks=[sink])
        cfg["log"] = {"level": "warning", "format": "json"}
        settings = load_settings(data=cfg)
        filler = Service(settings, dispatch=False)
        await filler.start()
        await fill(filler, n)
        await filler.stop()
        target = emulator.indexed() + n
        service = Service(settings)
        started, cpu = time.perf_counter(), time.process_time()
        await service.start()
        try:
            # Watch the emulator (another process), not the store: polling the store
            # would queue behind the dispatcher's own queries and slow the drain.
            async with httpx.AsyncClient(base_url=emulator.url) as client:
                while True:
                    stats_now = (await client.get("/_emulator/stats")).json()
                    if stats_now["indexed"] >= target:
                        break
                    await asyncio.sleep(0.02)
            while True:  # then until the last batch is marked delivered
                stats = await service.store.stats()
                if "hec" not in stats.sinks or stats.sinks["hec"].pending == 0:
                    return time.perf_counter() - started, time.process_time() - cpu
                await asyncio.sleep(0.01)
        finally:
            await service.stop()


async def sink_only(url: str, n: int, *, gzip: bool, ack: bool, batch: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        cfg = SplunkHecConfig(**sink_settings(url, Path(d), gzip=gzip, ack=ack, batch=batch))
        events = [
            make_event(i, actor=f"agent:{i % 50}", domain="payments", decision="blocked")
            for i in range(n)
        ]
        sink = SplunkHecSink(cfg)
        await sink.start()
        try:
            started = time.perf_counter()
            for i in range(0, n, batch):
                await sink.send(events[i : i + batch])
            return time.perf_counter() - started
        finally:
            await sink.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    print(
        f"events={args.events} batch={args.batch} cpus={os.cpu_count()} "
        f"load={os.getloadavg()[0]:.2f}"
    )
    print(f"{'variant':<22}{'drain ev/s':>12}{'drain/cpu':>12}{'sink ev/s':>12}")
    for ack in (False, True):
        emulator = Emulator(ack)
        try:
            for gzip in (True, False):
                seconds, cpu = asyncio.run(
                    drain(emulator, args.events, gzip=gzip, ack=ack, batch=args.batch)
                )
                sink_seconds = asyncio.run(
                    sink_only(emulator.url, args.events, gzip=gzip, ack=ack, batch=args.batch)
                )
                name = f"gzip={'on' if gzip else 'off'} ack={'on' if ack else 'off'}"
                print(
                    f"{name:<22}{args.events / seconds:>12,.0f}{args.events / cpu:>12,.0f}"
                    f"{args.events / sink_seconds:>12,.0f}",
                    flush=True,
                )
        finally:
            emulator.stop()
    print(f"load={os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
