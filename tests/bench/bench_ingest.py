"""Ingest benchmark: wrk with pre-signed requests against (a) a bare Starlette endpoint and
(b) the real ingress with fsynced SQLite commits, on the same machine in the same run.

Prints throughput (ratio b/a), p50 / p99 latency, latency at a fixed 2,000 req/s, and the
receiver's peak RSS. Run with `make bench` or `python tests/bench/bench_ingest.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from receiver import signatures  # noqa: E402
from tests.harness import SECRET, base_config, free_port, write_config  # noqa: E402

LUA = r"""
local reqs = {}
local n = 0
local threads = 0
local counter = 1
init = function(args)
  local f = assert(io.open(args[1], "r"))
  for line in f:lines() do
    local ts, sig, body = line:match("^(%d+)\t([^\t]+)\t(.*)$")
    n = n + 1
    reqs[n] = wrk.format("POST", args[2], {
      ["Content-Type"] = "application/json",
      ["X-BIGHUB-Timestamp"] = ts,
      ["X-BIGHUB-Signature"] = sig,
    }, body)
  end
  f:close()
  threads = tonumber(args[3])
  counter = tonumber(wrk.thread_id or 0) + 1
  delay_ms = tonumber(args[4])
end
setup = function(thread)
  thread:set("thread_id", __thread_index or 0)
end
request = function()
  local r = reqs[counter]
  counter = counter + threads
  if counter > n then counter = (counter % threads) + 1 end
  return r
end
if tonumber(os.getenv("BENCH_DELAY_MS") or "0") > 0 then
  delay = function() return tonumber(os.getenv("BENCH_DELAY_MS")) end
end
done = function(summary, latency, requests)
  io.write(string.format("BENCH %d %d %d %.3f %.3f %.3f %d\n",
    summary.requests, summary.duration, summary.errors.status + summary.errors.connect
      + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.bytes))
end
"""
# wrk gives each thread its own Lua state; a global counter handed out at setup keeps
# the threads on disjoint request subsets so no event id is sent twice.
LUA = LUA.replace("__thread_index", "_G.next_thread_index")
LUA = "next_thread_index = 0\n" + LUA.replace(
    'setup = function(thread)\n  thread:set("thread_id", _G.next_thread_index or 0)\nend',
    'setup = function(thread)\n  thread:set("thread_id", next_thread_index)\n'
    "  next_thread_index = next_thread_index + 1\nend",
)


def make_requests(path: Path, count: int, prefix: str) -> None:
    ts = int(time.time())
    with path.open("w") as fh:
        for i in range(count):
            body = json.dumps(
                {
                    "event_id": f"{prefix}-{i}",
                    "event_type": "decision_event.created",
                    "created_at": "2026-11-24T08:00:00Z",
                    "decision": "blocked",
                    "risk_score": 0.91,
                    "actor": f"agent:bench-{i % 50}",
                    "action": {"tool": "refund_payment", "amount": i % 5000},
                },
                separators=(",", ":"),
            ).encode()
            fh.write(f"{ts}\t{signatures.signature_header(SECRET, ts, body)}\t{body.decode()}\n")


def wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if proc.poll() is not None:
            raise RuntimeError("server exited")
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def run_wrk(
    url: str,
    reqs: Path,
    lua: Path,
    *,
    seconds: int,
    connections: int,
    threads: int,
    delay_ms: float,
) -> dict[str, float]:
    env = {**os.environ, "BENCH_DELAY_MS": str(delay_ms)}
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            "-s",
            str(lua),
            url,
            "--",
            str(reqs),
            "/webhooks/bighub",
            str(threads),
            str(delay_ms),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=seconds + 60,
        check=True,
    )
    m = re.search(r"^BENCH (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+) ([\d.]+) (\d+)$", out.stdout, re.M)
    if not m:
        raise RuntimeError(out.stdout + out.stderr)
    requests, duration_us, errors = int(m[1]), int(m[2]), int(m[3])
    return {
        "requests": requests,
        "rps": requests / (duration_us / 1e6),
        "errors": errors,
        "p50_ms": float(m[4]),
        "p99_ms": float(m[5]),
        "max_ms": float(m[6]),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (and its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--requests", type=int, default=150_000)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    lua = tmp / "signed.lua"
    lua.write_text(LUA)
    results: dict[str, dict[str, float]] = {}

    # (a) bare Starlette endpoint
    port = free_port()
    reqs = tmp / "bare.tsv"
    make_requests(reqs, args.requests, "bare")
    bare = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("bare_app.py")), str(port)]
    )
    try:
        wait_up(f"http://127.0.0.1:{port}/", bare)
        cpu0 = cpu_seconds(bare.pid)
        results["bare"] = run_wrk(
            f"http://127.0.0.1:{port}",
            reqs,
            lua,
            seconds=args.seconds,
            connections=args.connections,
            threads=args.threads,
            delay_ms=0,
        )
        results["bare"]["cpu_us"] = (
            (cpu_seconds(bare.pid) - cpu0) / results["bare"]["requests"] * 1e6
        )
    finally:
        bare.terminate()
        bare.wait()

    # (b) the real receiver, fsynced commits, stdout sink to /dev/null
    def receiver(name: str) -> tuple[subprocess.Popen[bytes], str]:
        d = tmp / name
        d.mkdir()
        cfg = base_config(d)
        cfg["log"] = {"level": "warning", "format": "json"}
        write_config(d / "config.toml", cfg)
        proc = subprocess.Popen(
            [sys.executable, "-m", "receiver", "serve", "--config", str(d / "config.toml")],
            stdout=subprocess.DEVNULL,
            stderr=(d / "stderr.log").open("wb"),
            cwd=d,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        url = f"http://127.0.0.1:{cfg['ingress']['port']}"
        wait_up(f"{url}/healthz", proc)
        return proc, url

    proc, url = receiver("max")
    try:
        reqs = tmp / "real.tsv"
        make_requests(reqs, args.requests, "real")
        cpu0 = cpu_seconds(proc.pid)
        results["real"] = run_wrk(
            url,
            reqs,
            lua,
            seconds=args.seconds,
            connections=args.connections,
            threads=args.threads,
            delay_ms=0,
        )
        time.sleep(1)  # let the dispatcher export the tail: its CPU is part of the cost
        results["real"]["cpu_us"] = (
            (cpu_seconds(proc.pid) - cpu0) / results["real"]["requests"] * 1e6
        )
        rss_max = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait()

    proc, url = receiver("fixed")
    try:
        reqs = tmp / "fixed.tsv"
        make_requests(reqs, 2000 * args.seconds + 5000, "fixed")
        conns = 20  # each connection waits 10 ms between requests: ~2,000 req/s offered
        # Calibrate the per-connection pause so the offered rate is ~2,000 req/s.
        delay = conns / 2000 * 1000
        probe = run_wrk(url, reqs, lua, seconds=2, connections=conns, threads=1, delay_ms=delay)
        delay = max(0.0, delay - (conns / probe["rps"] * 1000 - delay))
        reqs2 = tmp / "fixed2.tsv"
        make_requests(reqs2, 2000 * args.seconds + 5000, "fixed2")
        cpu0 = cpu_seconds(proc.pid)
        results["real_2000rps"] = run_wrk(
            url, reqs2, lua, seconds=args.seconds, connections=conns, threads=1, delay_ms=delay
        )
        results["real_2000rps"]["cpu_us"] = (
            (cpu_seconds(proc.pid) - cpu0) / results["real_2000rps"]["requests"] * 1e6
        )
        rss_fixed = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait()

    ratio = results["real"]["rps"] / results["bare"]["rps"]
    print("| run | req/s | p50 ms | p99 ms | server CPU µs/req | errors |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r.get('cpu_us', 0):.0f} | {int(r['errors'])} |"
        )
    print(f"\nratio real/bare: {ratio:.2f}")
    print(
        f"receiver peak RSS: {max(rss_max, rss_fixed):.1f} MB (max-throughput run {rss_max:.1f} MB)"
    )
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
