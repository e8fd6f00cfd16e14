"""Drain rate of the Sentinel sink into the Logs Ingestion emulator, against the bare
Microsoft client posting the same batches (events/s, interleaved in one run).

Variants, run in turn in each round so a loaded machine weighs on all alike:

- ``drain``: a SQLite spool pre-filled with N events, drained by the real dispatcher
  through the sink (rows, gzip, azure-monitor-ingestion, token from the Entra emulator),
  timed from the first batch delivered to the last (scaled to N): the steady state,
  leaving out start-up (clients, health probe, first token) as ``bare`` does;
  ``drain+start`` is from service start, start-up included;
- ``store``: the same spool drained by the same dispatcher into a sink that does
  nothing: the share of the store and the dispatcher;
- ``sink``: the sink's ``send`` alone over the same batches, no store;
- ``bare``: ``LogsIngestionClient.upload`` with the same rows as lists of dicts (the
  client serialises and gzips them itself), same batch size, same credential kind.

CPU µs per event is this process's CPU time (dispatcher, store threads, sink, client)
divided by N, over the same span as the rate: ``drain`` from the first batch delivered to
the last (scaled to N), ``drain+start`` from service start (start-up included). The emulators (HTTPS, test CA) run as their own process.

    PYTHONPATH=. python tests/bench/bench_sentinel.py [--events 20000] [--batch 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from receiver.dispatcher import Dispatcher  # noqa: E402
from receiver.metrics import Metrics  # noqa: E402
from receiver.service import Service  # noqa: E402
from receiver.settings import load_settings  # noqa: E402
from sinks.base import Event, SinkHealth  # noqa: E402
from sinks.sentinel import SentinelConfig, SentinelSink  # noqa: E402
from sinks.sentinel.encoder import row_for  # noqa: E402
from tests.fakes.azure import CLIENT_ID, CLIENT_SECRET, DCR_ID, TENANT_ID  # noqa: E402
from tests.fakes.hec import make_event  # noqa: E402
from tests.harness import base_config, event_body, free_port, stored_event  # noqa: E402

STREAMS = {
    "decision": "Custom-BighubDecisions",
    "approval": "Custom-BighubDecisions",
    "rule": "Custom-BighubRuleChanges",
    "other": "Custom-BighubDecisions",
}


class Emulator:
    """``python -m tests.fakes.azure`` in a subprocess (Entra ID + Logs Ingestion)."""

    def __init__(self, tls_dir: Path) -> None:
        self.login_port, self.dce_port = free_port(), free_port()
        self.login = f"https://127.0.0.1:{self.login_port}"
        self.endpoint = f"https://127.0.0.1:{self.dce_port}"
        self.ca = tls_dir / "ca.pem"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fakes.azure",
                "--login-port",
                str(self.login_port),
                "--dce-port",
                str(self.dce_port),
                "--tls-dir",
                str(tls_dir),
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.rows()
                return
            except (httpx.HTTPError, OSError):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("emulator did not start") from None
                time.sleep(0.1)

    def rows(self) -> int:
        resp = httpx.get(f"{self.endpoint}/_emulator/stats", verify=str(self.ca), timeout=5)
        return int(resp.json()["rows"])

    def sink_table(self, batch: int) -> dict[str, Any]:
        return {
            "name": "sentinel",
            "type": "sentinel",
            "endpoint": self.endpoint,
            "dcr_immutable_id": DCR_ID,
            "tenant_id": TENANT_ID,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "authority_host": self.login,
            "validate_authority": False,
            "ca_file": str(self.ca),
            "batch_max_events": batch,
            "batch_max_wait_seconds": 0,
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def events(n: int) -> list[Event]:
    return [
        make_event(
            i,
            actor=f"agent:{i % 50}",
            domain="payments",
            decision="blocked",
            risk_score=0.91,
            action={"tool": "refund_payment", "amount": 1250, "currency": "EUR"},
            rule_id="rule_refund_limit",
        )
        for i in range(n)
    ]


async def fill(service: Service, n: int, prefix: str) -> None:
    """Store n decision events routed to the sink (concurrent ingests share commits)."""
    for start in range(0, n, 2000):
        await asyncio.gather(
            *(
                service.store.ingest(
                    stored_event(
                        f"{prefix}-{i}",
                        sinks=("sentinel",),
                        body=event_body(
                            f"{prefix}-{i}",
                            actor=f"agent:{i % 50}",
                            domain="payments",
                            decision="blocked",
                            risk_score=0.91,
                            action={"tool": "refund_payment", "amount": 1250},
                            rule_id="rule_refund_limit",
                        ),
                    )
                )
                for i in range(start, min(n, start + 2000))
            )
        )


def settings_for(emulator: Emulator, tmp: Path, batch: int) -> Any:
    cfg = base_config(tmp, sinks=[emulator.sink_table(batch)])
    cfg["log"] = {"level": "warning", "format": "json"}
    return load_settings(data=cfg)


async def drain(emulator: Emulator, n: int, batch: int) -> tuple[float, float, float, float]:
    """Steady-state seconds and CPU seconds for n events, then wall and CPU seconds
    including start-up, to drain n stored events through dispatcher + sink."""
    with tempfile.TemporaryDirectory() as d:
        settings = settings_for(emulator, Path(d), batch)
        filler = Service(settings, dispatch=False)
        await filler.start()
        await fill(filler, n, "drain")
        await filler.stop()
        service = Service(settings)
        delivered = service.metrics.delivered.labels("sentinel")
        started, cpu = time.perf_counter(), time.process_time()
        await service.start()
        first: tuple[float, float, float] | None = None
        try:
            # The dispatcher's own counter (rows the service answered 204 for, marked
            # delivered): polling it costs nothing, unlike asking the emulator over TLS.
            while True:
                count = delivered._value.get()
                now = time.perf_counter()
                if count and first is None:
                    first = (now, count, time.process_time())
                if count >= n and first is not None:
                    cpu_now = time.process_time()
                    # Steady state: from the first batch delivered to the last, which
                    # leaves out start-up (clients, health probe, first token) as bare does;
                    # its CPU over the same span, scaled the same way.
                    scale = n / max(1.0, n - first[1])
                    steady, steady_cpu = (now - first[0]) * scale, (cpu_now - first[2]) * scale
                    return steady, steady_cpu, now - started, cpu_now - cpu
                await asyncio.sleep(0.002)
        finally:
            await service.stop()


class NullSink:
    """Takes every batch at once: what the store and dispatcher cost on their own."""

    config_model = SentinelConfig

    def __init__(self, n: int) -> None:
        self.taken = 0
        self.n = n
        self.done = asyncio.Event()

    async def start(self) -> None:
        return None

    async def send(self, batch: Sequence[Event]) -> None:
        self.taken += len(batch)
        if self.taken >= self.n:
            self.done.set()

    async def health(self) -> SinkHealth:
        return SinkHealth(ok=True)

    async def close(self) -> None:
        return None


async def store_only(emulator: Emulator, n: int, batch: int) -> tuple[float, float]:
    """The same spool and dispatcher draining into a sink that does nothing."""
    with tempfile.TemporaryDirectory() as d:
        settings = settings_for(emulator, Path(d), batch)
        service = Service(settings, dispatch=False)
        await service.start()
        try:
            await fill(service, n, "store")
            sink = NullSink(n)
            dispatcher = Dispatcher(
                sink, settings.sinks[0], service.store, Metrics(), poll_seconds=0.05
            )
            started, cpu = time.perf_counter(), time.process_time()
            dispatcher.start()
            try:
                await sink.done.wait()
                return time.perf_counter() - started, time.process_time() - cpu
            finally:
                await dispatcher.stop()
        finally:
            await service.stop()


async def sink_only(emulator: Emulator, batch_events: list[list[Event]]) -> tuple[float, float]:
    sink = SentinelSink(SentinelConfig(**emulator.sink_table(len(batch_events[0]))))
    await sink.start()
    await sink.send(batch_events[0][:1])  # token fetched outside the timing, as for bare
    try:
        started, cpu = time.perf_counter(), time.process_time()
        for batch in batch_events:
            await sink.send(batch)
        return time.perf_counter() - started, time.process_time() - cpu
    finally:
        await sink.close()


def bare(emulator: Emulator, batch_rows: list[list[dict[str, Any]]]) -> tuple[float, float]:
    from azure.identity import ClientSecretCredential
    from azure.monitor.ingestion import LogsIngestionClient

    credential = ClientSecretCredential(
        TENANT_ID,
        CLIENT_ID,
        CLIENT_SECRET,
        authority=emulator.login,
        disable_instance_discovery=True,
        connection_verify=str(emulator.ca),
    )
    client = LogsIngestionClient(
        emulator.endpoint,
        credential,
        credential_scopes=["https://monitor.azure.com//.default"],
        connection_verify=str(emulator.ca),
        retry_total=0,
    )
    try:
        client.upload(DCR_ID, "Custom-BighubDecisions", batch_rows[0][:1])  # the token
        started, cpu = time.perf_counter(), time.process_time()
        for rows in batch_rows:
            client.upload(DCR_ID, "Custom-BighubDecisions", rows)
        return time.perf_counter() - started, time.process_time() - cpu
    finally:
        client.close()
        credential.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    n, size = args.events, args.batch
    all_events = events(n)
    batch_events = [all_events[i : i + size] for i in range(0, n, size)]
    # The same rows the sink posts, as the dicts the bare client takes (built untimed).
    batch_rows = [[json.loads(row_for(e, STREAMS).data) for e in b] for b in batch_events]
    print(
        f"events={n} batch={size} rounds={args.rounds} cpus={os.cpu_count()} "
        f"load={os.getloadavg()[0]:.2f}"
    )
    results: dict[str, list[tuple[float, float]]] = {
        "drain": [],
        "drain+start": [],
        "store": [],
        "sink": [],
        "bare": [],
    }

    def run_drain(e: Emulator) -> None:
        steady, steady_cpu, total, cpu = asyncio.run(drain(e, n, size))
        results["drain"].append((steady, steady_cpu))
        results["drain+start"].append((total, cpu))

    runs: dict[str, Callable[[Emulator], None]] = {
        "drain": run_drain,
        "store": lambda e: results["store"].append(asyncio.run(store_only(e, n, size))),
        "sink": lambda e: results["sink"].append(asyncio.run(sink_only(e, batch_events))),
        "bare": lambda e: results["bare"].append(bare(e, batch_rows)),
    }
    with tempfile.TemporaryDirectory() as d:
        emulator = Emulator(Path(d))
        try:
            for r in range(args.rounds):
                for run in runs.values():
                    run(emulator)
                print(f"round {r + 1}: load={os.getloadavg()[0]:.2f}", flush=True)
        finally:
            emulator.stop()
    print(f"{'variant':<12}{'events/s (median)':>20}{'CPU µs/event':>15}{'vs bare':>10}")
    bare_rate = statistics.median(n / s for s, _ in results["bare"])
    for name, samples in results.items():
        rate = statistics.median(n / s for s, _ in samples)
        cpu_us = statistics.median(c / n * 1e6 for _, c in samples)
        print(f"{name:<12}{rate:>20,.0f}{cpu_us:>15,.1f}{rate / bare_rate:>10.2f}")
    ratios = [b / d for (d, _), (b, _) in zip(results["drain"], results["bare"], strict=True)]
    print("drain/bare per round: " + ", ".join(f"{x:.2f}" for x in ratios))


if __name__ == "__main__":
    main()
