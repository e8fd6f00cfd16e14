"""Where the real ingress spends its CPU: py-spy samples under wrk load, by component.

Starts the receiver with its default settings (SQLite spool, stdout sink to /dev/null,
logging at the default ``info`` level), loads it with wrk (pre-signed unique events),
samples every thread with py-spy (idle threads excluded, so samples follow CPU) and
charges each sample to the innermost frame that belongs to a known component (stdlib
frames such as ``json`` or ``asyncio`` are charged to the component that called them).
The shares are multiplied by the measured CPU µs per request. Samples count a thread
while it runs or waits for a CPU, so on a busy machine the shares lean towards threads
that wait a lot; the second table, CPU time per thread from ``/proc`` (user and system),
is the exact figure for each thread.

    PYTHONPATH=. .venv/bin/python tests/bench/profile_ingest.py --seconds 15

Needs wrk and py-spy (``pip install py-spy``; it is not a project dependency). Figures
are only comparable within one run on one machine.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.bench_ingest import (  # noqa: E402
    LUA,
    cpu_seconds,
    make_requests,
    run_wrk,
    start_receiver,
)

# (component, fragments): a sample is charged to the innermost frame matching any fragment;
# within one frame the first component listed wins. stdlib frames (json, hmac, asyncio
# futures) are thereby charged to the component that called them.
COMPONENTS: list[tuple[str, tuple[str, ...]]] = [
    # py-spy names each thread in its root frame (--threads): a store thread is charged
    # whole, its waits for work, the GIL or a CPU included.
    ("SQLite writer thread (group commit)", ("): sqlite-write", "SQLiteStore._commit (")),
    ("store reads for the dispatcher (reader thread)", ("): sqlite-read",)),
    ("dispatcher + stdout sink", ("receiver/dispatcher.py", "/sinks/")),
    ("signature", ("receiver/signatures.py",)),
    ("envelope", ("receiver/envelope.py",)),
    ("logging (structlog, request line)", ("structlog/", "receiver/log.py", "logging/")),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("store hand-off (ingest call, futures, executor)", ("receiver/store/", "concurrent/futures/")),
    ("Starlette", ("starlette/",)),
    (
        "webhook handler (endpoints, app, service)",
        (
            "receiver/webhook.py",
            "receiver/endpoints.py",
            "receiver/app.py",
            "receiver/service.py",
            "receiver/routing.py",
        ),
    ),
    ("edge protocol (receiver/edge)", ("receiver/edge/",)),
    ("uvicorn + httptools", ("uvicorn/", "httptools/")),
    ("event loop (uvloop C code, asyncio)", ("uvloop/", "asyncio/", "Runner.run", "): MainThread")),
]


def component(stack: str) -> str:
    """The component a collapsed stack (root;...;leaf) is charged to.

    The store's worker threads are charged whole (whatever they call): the first two
    components match anywhere in the stack.
    """
    for name, fragments in COMPONENTS[:2]:
        if any(f in stack for f in fragments):
            return name
    for frame in reversed(stack.split(";")):
        for name, fragments in COMPONENTS:
            if any(f in frame for f in fragments):
                return name
    return "other"


def thread_cpu(pid: int) -> dict[int, tuple[float, float]]:
    """(user, system) CPU seconds of each thread of ``pid``."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        out[int(task.name)] = (int(fields[11]) / tick, int(fields[12]) / tick)
    return out


def thread_names(raw: Path) -> dict[int, str]:
    """Thread id -> name, from the root frames py-spy writes with ``--threads``."""
    names = {}
    for line in raw.read_text().splitlines():
        m = re.match(r"thread \((?:0x)?([0-9a-fA-F]+)\): ([^;]+?)(?: \(|;|$)", line)
        if m:
            with contextlib.suppress(ValueError):
                names[int(m[1])] = m[2]
    return names


def attribute(raw: Path, only: str = "") -> dict[str, int]:
    """Samples per component; ``only``: stacks whose root frame holds this text."""
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit() and only in stack.split(";", 1)[0]:
            counts[component(stack)] += int(n)
    return dict(counts)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--requests", type=int, default=300_000)
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--keep", help="copy the raw py-spy stacks to this file")
    args = ap.parse_args()
    for tool in ("wrk", "py-spy"):
        if shutil.which(tool) is None and not (Path(sys.executable).parent / tool).exists():
            print(f"{tool} is not installed", file=sys.stderr)
            return 2
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    tmp = Path(tempfile.mkdtemp(prefix="profile-ingest-"))
    lua = tmp / "signed.lua"
    lua.write_text(LUA)
    reqs = tmp / "reqs.tsv"
    make_requests(reqs, args.requests, "prof")
    proc, url = start_receiver(tmp, "recv", log_level=args.log_level)
    raw = tmp / "stacks.txt"
    try:
        run_wrk(url, reqs, lua, seconds=2, connections=args.connections, threads=1, delay_ms=0)
        spy = subprocess.Popen(
            [
                pyspy,
                "record",
                "-p",
                str(proc.pid),
                "-f",
                "raw",
                "-o",
                str(raw),
                "-r",
                "200",
                "-d",
                str(args.seconds),
                "--nonblocking",
                "--threads",
                "--full-filenames",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        cpu0 = cpu_seconds(proc.pid)
        per_thread0 = thread_cpu(proc.pid)
        result = run_wrk(
            url,
            reqs,
            lua,
            seconds=args.seconds - 1,
            connections=args.connections,
            threads=1,
            delay_ms=0,
        )
        cpu_us = (cpu_seconds(proc.pid) - cpu0) / result["requests"] * 1e6
        per_thread1 = thread_cpu(proc.pid)
        spy.wait(timeout=args.seconds + 30)
    finally:
        proc.terminate()
        proc.wait()
    if args.keep:
        shutil.copy(raw, args.keep)
    counts = attribute(raw)
    total = sum(counts.values()) or 1
    print(
        f"load average: {os.getloadavg()[0]:.2f}; {result['rps']:.0f} req/s;"
        f" server CPU {cpu_us:.0f} µs/request; {total} samples"
    )
    print("\nSamples (a thread counts while it runs or waits for a CPU):\n")
    print("| component | share | CPU µs/request |")
    print("|---|---|---|")
    for name, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {n / total:.1%} | {n / total * cpu_us:.0f} |")
    per = 1e6 / result["requests"]
    names = thread_names(raw)
    used = {}
    for tid, (user1, sys1) in per_thread1.items():
        user0, sys0 = per_thread0.get(tid, (0.0, 0.0))
        used[tid] = ((user1 - user0) * per, (sys1 - sys0) * per)
    print("\nCPU time per thread (/proc):\n")
    print("| thread | CPU µs/request | user | system |")
    print("|---|---|---|---|")
    for tid, (user, system) in sorted(used.items(), key=lambda kv: -sum(kv[1])):
        if user + system >= 0.5:
            name = names.get(tid, "MainThread" if tid == proc.pid else str(tid))
            print(f"| {name} | {user + system:.0f} | {user:.0f} | {system:.0f} |")
    # The event loop thread's samples split its exact CPU time by component; every
    # other thread is charged whole with its own CPU time.
    main = attribute(raw, only="): MainThread")
    main_total = sum(main.values()) or 1
    main_cpu = sum(used.get(proc.pid, (0.0, 0.0)))
    print("\nCPU µs/request by component (event loop thread by its samples, others whole):\n")
    print("| component | CPU µs/request |")
    print("|---|---|")
    rows = {name: n / main_total * main_cpu for name, n in main.items()}
    for tid, (user, system) in used.items():
        if tid != proc.pid and user + system >= 0.5:
            rows[f"thread {names.get(tid, tid)}"] = user + system
    for name, value in sorted(rows.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {value:.1f} |")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
