"""The spool redesign against the previous design, in one run on one machine.

    python tests/bench/bench_spool.py [--baseline REV] [--rounds 3] [--seconds 8]
                                      [--dispatch-events 100000] [--backlog 500000]

``--baseline`` (default: 7bf19b8, the outbox design of 0.1.0) is exported with
``git archive`` into a temporary directory and run with the same interpreter and
packages as the working tree (``PYTHONPATH`` picks the tree). Variants alternate within
each round, so a machine that gets busier or quieter mid-run shifts both alike; the
figures are CPU time of the server process (user + system, all threads) per request or
per event, and their ratio new / baseline.

1. ingest: wrk with pre-signed unique webhooks against ``serve`` (SQLite, fsynced group
   commits, logging at the default ``info``); the stdout sink's batches wait an hour so
   dispatch stays out: server CPU µs per request.
2. dispatch: a spool pre-filled with N events for the stdout sink (to /dev/null), then
   ``serve`` drains it: server CPU µs per delivered event (from the first /metrics read
   to the last event delivered).
3. backlog (working tree only): ingest req/s while a backlog of 500k events drains, and
   with an empty spool, alternated; the ratio.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from statistics import median
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.bench_ingest import LUA, cpu_seconds, make_requests, run_wrk, wait_up  # noqa: E402
from tests.harness import base_config, write_config  # noqa: E402

FILL = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from pathlib import Path
    from receiver.store import NewEvent, SQLiteStore

    async def main(path, count, prefix):
        store = SQLiteStore(Path(path))
        await store.open()
        if hasattr(store, "ensure_cursors"):  # the log design: the sink's cursor first
            from receiver.store import Route
            await store.ensure_cursors([Route("console", ("*",))])
        body = json.dumps({"event_type": "decision_event.created", "decision": "blocked",
                           "risk_score": 0.91, "actor": "agent:bench",
                           "action": {"tool": "refund_payment", "amount": 1250}}).encode()
        done = 0
        while done < count:
            n = min(2000, count - done)
            await asyncio.gather(*(store.ingest(NewEvent(
                source="bighub", event_id=f"{prefix}-{done + i}", id_origin="body.event_id",
                event_type="decision_event.created", category="decision", occurred_at=None,
                received_at=time.time(), delivery_id=None, body=body, signature=None,
                timestamp=None, sinks=("console",))) for i in range(n)))
            done += n
        await store.close()

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
    """
)


def export_tree(rev: str, dest: Path) -> Path:
    """``rev``'s receiver/ and sinks/ in ``dest`` (our own history, nothing fetched)."""
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "receiver", "sinks"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def env_for(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{ROOT}"}


class Server:
    def __init__(self, tree: Path, work: Path, sink: dict[str, Any]) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.cfg = base_config(work, sinks=[{"name": "console", "type": "stdout", **sink}])
        self.cfg["log"] = {"format": "json", "level": "info"}
        self.path = write_config(work / "config.toml", self.cfg)
        self.tree, self.work = tree, work
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.cfg['ingress']['port']}"

    def start(self) -> Server:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "receiver", "serve", "--config", str(self.path)],
            stdout=subprocess.DEVNULL,
            stderr=(self.work / "stderr.log").open("ab"),
            cwd=self.work,
            env=env_for(self.tree),
        )
        wait_up(f"{self.url}/healthz", self.proc)
        return self

    def delivered(self) -> int:
        text = httpx.get(f"http://127.0.0.1:{self.cfg['admin']['port']}/metrics", timeout=30).text
        m = re.search(r'^bighub_siem_sink_delivered_total\{sink="console"\} (\S+)$', text, re.M)
        return int(float(m.group(1))) if m else 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)


def fill(tree: Path, spool: Path, count: int, prefix: str) -> None:
    subprocess.run(
        [sys.executable, "-c", FILL, str(spool), str(count), prefix],
        env=env_for(tree),
        cwd=spool.parent,  # not the repository root: "-c" puts the cwd first on sys.path
        check=True,
        timeout=3600,
    )


def ingest_cpu(tree: Path, work: Path, args: argparse.Namespace, lua: Path) -> dict[str, float]:
    work.mkdir(parents=True)
    reqs = work / "requests.tsv"
    make_requests(reqs, args.requests, f"ing-{work.name}")
    # Batches that never fill (count, bytes) nor age: dispatch stays out of the figure.
    server = Server(
        tree,
        work,
        {"batch_max_wait_seconds": 3600, "batch_max_events": 100_000, "batch_max_bytes": 2**30},
    )
    server.start()
    try:
        assert server.proc is not None
        cpu0 = cpu_seconds(server.proc.pid)
        r = run_wrk(
            server.url, reqs, lua, seconds=args.seconds, connections=32, threads=1, delay_ms=0
        )
        r["cpu_us"] = (cpu_seconds(server.proc.pid) - cpu0) / r["requests"] * 1e6
        return r
    finally:
        server.stop()


def dispatch_cpu(tree: Path, work: Path, template: Path) -> dict[str, float]:
    work.mkdir(parents=True)
    shutil.copy(template, work / "spool.db")
    server = Server(tree, work, {"batch_max_events": 1000})
    server.start()
    try:
        assert server.proc is not None
        total = int(template.name.split("-")[1].split(".")[0])
        d0, cpu0, t0 = server.delivered(), cpu_seconds(server.proc.pid), time.monotonic()
        while (d := server.delivered()) < total:
            if time.monotonic() - t0 > 600:
                raise RuntimeError(f"drained {d} of {total} in 600 s")
            time.sleep(0.2)
        cpu = cpu_seconds(server.proc.pid) - cpu0
        return {
            "events": d - d0,
            "cpu_us": cpu / (d - d0) * 1e6,
            "ev_per_s": (d - d0) / (time.monotonic() - t0),
        }
    finally:
        server.stop()


def backlog_run(
    tree: Path, work: Path, template: Path | None, args: argparse.Namespace, lua: Path
) -> dict[str, float]:
    work.mkdir(parents=True)
    if template is not None:
        shutil.copy(template, work / "spool.db")
    reqs = work / "requests.tsv"
    make_requests(reqs, args.requests, f"bl-{work.name}")
    server = Server(tree, work, {"batch_max_events": 1000})
    server.start()
    try:
        before = server.delivered()
        r = run_wrk(
            server.url, reqs, lua, seconds=args.seconds, connections=32, threads=1, delay_ms=0
        )
        r["drained"] = server.delivered() - before
        return r
    finally:
        server.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", default="7bf19b8")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--requests", type=int, default=150_000)
    ap.add_argument("--dispatch-events", type=int, default=100_000)
    ap.add_argument("--backlog", type=int, default=500_000)
    ap.add_argument("--skip", action="append", default=[], help="ingest, dispatch or backlog")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-spool-"))
    try:
        trees = {"baseline": export_tree(args.baseline, tmp / "baseline"), "new": ROOT}
        lua = tmp / "signed.lua"
        lua.write_text(LUA)
        print(
            f"# baseline {args.baseline}; load average {os.getloadavg()[0]:.2f}; cpus {os.cpu_count()}"
        )
        if "ingest" not in args.skip:
            got: dict[str, list[dict[str, float]]] = {"baseline": [], "new": []}
            for rnd in range(args.rounds):
                order = ["baseline", "new"] if rnd % 2 == 0 else ["new", "baseline"]
                for name in order:
                    got[name].append(ingest_cpu(trees[name], tmp / f"ing-{name}-{rnd}", args, lua))
            print("\n## ingest (server CPU per request, dispatch held back)\n")
            print("| variant | req/s (median) | CPU µs/request (median) | runs |")
            print("|---|---|---|---|")
            for name, runs in got.items():
                print(
                    f"| {name} | {median(r['rps'] for r in runs):.0f} | "
                    f"{median(r['cpu_us'] for r in runs):.0f} | "
                    + " / ".join(f"{r['cpu_us']:.0f}" for r in runs)
                    + " |"
                )
            ratio = median(r["cpu_us"] for r in got["new"]) / median(
                r["cpu_us"] for r in got["baseline"]
            )
            print(f"\ningest CPU per request, new / baseline: {ratio:.2f}")
        if "dispatch" not in args.skip:
            templates = {}
            for name, tree in trees.items():
                path = tmp / f"{name}-{args.dispatch_events}.db"
                fill(tree, path, args.dispatch_events, f"dsp-{name}")
                templates[name] = path
            got = {"baseline": [], "new": []}
            for rnd in range(args.rounds):
                order = ["baseline", "new"] if rnd % 2 == 0 else ["new", "baseline"]
                for name in order:
                    got[name].append(
                        dispatch_cpu(trees[name], tmp / f"dsp-{name}-{rnd}", templates[name])
                    )
            print(f"\n## dispatch ({args.dispatch_events} events, stdout sink to /dev/null)\n")
            print("| variant | events/s (median) | CPU µs/event (median) | runs |")
            print("|---|---|---|---|")
            for name, runs in got.items():
                print(
                    f"| {name} | {median(r['ev_per_s'] for r in runs):.0f} | "
                    f"{median(r['cpu_us'] for r in runs):.1f} | "
                    + " / ".join(f"{r['cpu_us']:.1f}" for r in runs)
                    + " |"
                )
            ratio = median(r["cpu_us"] for r in got["new"]) / median(
                r["cpu_us"] for r in got["baseline"]
            )
            print(f"\ndispatch CPU per event, new / baseline: {ratio:.2f}")
        if "backlog" not in args.skip:
            template = tmp / f"backlog-{args.backlog}.db"
            fill(ROOT, template, args.backlog, "backlog")
            runs: dict[str, list[dict[str, float]]] = {"empty": [], "backlog": []}
            for rnd in range(args.rounds):
                for name in ["empty", "backlog"] if rnd % 2 == 0 else ["backlog", "empty"]:
                    runs[name].append(
                        backlog_run(
                            ROOT,
                            tmp / f"bl-{name}-{rnd}",
                            template if name == "backlog" else None,
                            args,
                            lua,
                        )
                    )
            print(f"\n## ingest while a backlog of {args.backlog} events drains (working tree)\n")
            print("| spool | req/s (median) | p99 ms (median) | events drained meanwhile |")
            print("|---|---|---|---|")
            for name, rs in runs.items():
                print(
                    f"| {name} | {median(r['rps'] for r in rs):.0f} | "
                    f"{median(r['p99_ms'] for r in rs):.1f} | "
                    f"{median(r['drained'] for r in rs):.0f} |"
                )
            ratio = median(r["rps"] for r in runs["backlog"]) / median(
                r["rps"] for r in runs["empty"]
            )
            print(f"\ningest req/s with the backlog draining / without: {ratio:.2f}")
        print(f"\n# load average after: {os.getloadavg()[0]:.2f}")
    finally:
        if os.environ.get("BENCH_KEEP"):
            print(f"# kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
