"""Shared by the sink benchmarks: a sink against its bare client, interleaved, in one run.

Each benchmark runs rounds of three modes on the same events, in rotating order so a
noisy machine hurts every mode alike:

- ``bare``: the client library alone sending the very bytes the sink would send
  (records / request bodies / objects encoded before the clock starts), no spool;
- ``send``: the sink's ``send()`` on the events, batch after batch, no spool: the
  sink's own cost is ``send`` minus ``bare``;
- ``drain``: the end-to-end path, events stored with ``Store.ingest`` and drained by
  the real ``Dispatcher`` through the sink (the store and dispatcher included).

Per mode: the median events/s, the median CPU µs per event of this process (all its
threads: the client's I/O thread, the store's writer), and the ratio of events/s to
``bare`` in the same round. Servers (tansu, the HEC emulator, moto) run in their own
processes and are not in the CPU figure.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from receiver.dispatcher import Dispatcher
from receiver.metrics import Metrics
from receiver.store import SQLiteStore
from sinks import Event, Sink, SinkConfig
from tests.harness import stored_event

MODES = ("bare", "send", "drain")


@dataclass(frozen=True)
class Sample:
    mode: str
    round: int
    events: int
    wall: float
    cpu: float

    @property
    def rate(self) -> float:
        return self.events / self.wall

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.events * 1e6


async def timed(mode: str, rnd: int, events: int, work: Callable[[], Awaitable[object]]) -> Sample:
    started, cpu = time.perf_counter(), time.process_time()
    await work()
    return Sample(mode, rnd, events, time.perf_counter() - started, time.process_time() - cpu)


async def timed_send(rnd: int, sink: Sink, events: Sequence[Event], batch: int) -> Sample:
    """The ``send`` mode: ``sink.send()`` batch after batch (started before, closed here)."""

    async def send_all() -> None:
        for start in range(0, len(events), batch):
            await sink.send(events[start : start + batch])

    try:
        return await timed("send", rnd, len(events), send_all)
    finally:
        await sink.close()


def order(rnd: int, modes: Sequence[str] = MODES) -> list[str]:
    """The modes of round ``rnd``, rotated so each mode runs first, second, last in turn."""
    k = rnd % len(modes)
    return [*modes[k:], *modes[:k]]


def run_rounds(
    modes: Sequence[str], rounds: int, run: Callable[[str, int], tuple[Sample, str]]
) -> list[Sample]:
    """``rounds`` rounds of ``modes`` in rotating order; ``run(mode, round)`` gives the
    sample and a note for its progress line (what was checked)."""
    samples = []
    for rnd in range(rounds):
        for mode in order(rnd, modes):
            sample, note = run(mode, rnd)
            samples.append(sample)
            print(
                f"round {rnd} {mode:<11} {sample.rate:>9,.0f} ev/s"
                f"  {sample.cpu_us:6.1f} CPU µs/event{note}",
                flush=True,
            )
    return samples


def report(title: str, samples: Sequence[Sample], also: str | None = None) -> str:
    """A markdown table: median ev/s, CPU µs/event, ratio to ``bare`` within each round
    (and to the mode ``also`` when given, e.g. a bare client that encodes too)."""
    seen = list(dict.fromkeys(s.mode for s in samples))
    canonical = ["bare", *([also] if also else []), "send", "drain"]
    modes = [m for m in canonical if m in seen] + [m for m in seen if m not in canonical]
    baselines = ["bare", *([also] if also else [])]
    rates = {b: {s.round: s.rate for s in samples if s.mode == b} for b in baselines}
    head = "| mode | runs | events/s (median) | CPU µs/event (median) |"
    head += "".join(f" ratio to {b} |" for b in baselines)
    lines = [f"### {title}", "", head, "|---|---:|---:|---:|" + "---:|" * len(baselines)]
    for mode in modes:
        mine = [s for s in samples if s.mode == mode]
        row = (
            f"| {mode} | {len(mine)} | {statistics.median(s.rate for s in mine):,.0f}"
            f" | {statistics.median(s.cpu_us for s in mine):.1f} |"
        )
        for b in baselines:
            ratios = [s.rate / rates[b][s.round] for s in mine if s.round in rates[b]]
            row += f" {statistics.median(ratios):.2f} |" if ratios else " - |"
        lines.append(row)
    return "\n".join(lines)


def machine() -> str:
    load = os.getloadavg()
    return f"{os.cpu_count()} cores, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"


async def drain(
    sink: Sink,
    config: SinkConfig,
    spool: Path,
    events: Sequence[Event],
    *,
    on_start: Callable[[], None] | None = None,
    read_ahead: bool = True,
) -> tuple[float, float]:
    """Store ``events`` (routed to ``config.name``) with ``Store.ingest``, then time the
    real ``Dispatcher`` draining them through ``sink``: (wall seconds, CPU seconds)."""
    store = SQLiteStore(spool, max_spool_events=10_000_000)
    await store.open()
    try:
        for start in range(0, len(events), 2000):
            await asyncio.gather(
                *(
                    store.ingest(
                        stored_event(
                            e.event_id,
                            sinks=(config.name,),
                            event_type=e.event_type,
                            body=e.body,
                            received_at=e.received_at,
                        )
                    )
                    for e in events[start : start + 2000]
                )
            )
        metrics = Metrics()
        dispatcher = Dispatcher(
            sink, config, store, metrics, poll_seconds=0.01, read_ahead=read_ahead
        )
        if on_start is not None:
            on_start()
        started, cpu = time.perf_counter(), time.process_time()
        dispatcher.start()
        # The dispatcher signals nothing: poll its in-memory counter (no store queries).
        while (  # noqa: ASYNC110
            metrics.registry.get_sample_value(
                "bighub_siem_sink_delivered_total", {"sink": config.name}
            )
            or 0
        ) < len(events):
            await asyncio.sleep(0.005)
        wall, used = time.perf_counter() - started, time.process_time() - cpu
        await dispatcher.stop()
        return wall, used
    finally:
        await store.close()
