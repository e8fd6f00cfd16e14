"""Ingest benchmark: wrk with pre-signed requests against (a) a bare Starlette endpoint and
(b) the real ingress with fsynced SQLite commits and logging at its default level (info),
on the same machine in the same run.

The two run in turns (bare, real, bare, real, ...), each pair back to back, so a noisy
neighbour slows both sides of a pair alike: the ratio reported is the median of the
pairs' ratios. Then both are offered the same fixed rate (default 2,000 req/s) in turns
for p50 / p99 latency. Prints the receiver's peak RSS and the server CPU µs per request.
Run with `make bench` or `PYTHONPATH=. .venv/bin/python tests/bench/bench_ingest.py`.
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


def start_bare(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("bare_app.py")), str(port)]
    )
    url = f"http://127.0.0.1:{port}"
    wait_up(f"{url}/", proc)
    return proc, url


def start_receiver(
    tmp: Path, name: str, *, log_level: str = "info"
) -> tuple[subprocess.Popen[bytes], str]:
    """The real receiver: SQLite spool (fsynced group commits), stdout sink to /dev/null."""
    d = tmp / name
    d.mkdir()
    cfg = base_config(d)
    cfg["log"] = {"level": log_level, "format": "json"}
    write_config(d / "config.toml", cfg)
    proc = subprocess.Popen(
        [sys.executable, "-m", "receiver", "serve", "--config", str(d / "config.toml")],
        stdout=subprocess.DEVNULL,
        # The request lines are written as in production (buffered), to a file.
        stderr=(d / "stderr.log").open("wb"),
        cwd=d,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    url = f"http://127.0.0.1:{cfg['ingress']['port']}"
    wait_up(f"{url}/healthz", proc)
    return proc, url


def measured(
    proc: subprocess.Popen[bytes], url: str, reqs: Path, lua: Path, **wrk: float
) -> dict[str, float]:
    cpu0 = cpu_seconds(proc.pid)
    result = run_wrk(url, reqs, lua, **wrk)  # type: ignore[arg-type]
    # Let the dispatcher export the tail: its CPU is part of the cost of a request.
    time.sleep(0.5)
    result["cpu_us"] = (cpu_seconds(proc.pid) - cpu0) / max(1, result["requests"]) * 1e6
    return result


def calibrated_delay(
    proc: subprocess.Popen[bytes], url: str, reqs: Path, lua: Path, rate: int, conns: int
) -> float:
    """The per-connection pause (ms) that makes ``conns`` connections offer ``rate`` req/s."""
    delay = conns / rate * 1000
    probe = run_wrk(url, reqs, lua, seconds=2, connections=conns, threads=1, delay_ms=delay)
    return max(0.0, delay - (conns / max(1.0, probe["rps"]) * 1000 - delay))


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10, help="length of each run")
    ap.add_argument("--rounds", type=int, default=3, help="bare/real pairs at max throughput")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--requests", type=int, default=120_000, help="distinct events per run")
    ap.add_argument("--rate", type=int, default=2000, help="offered req/s of the fixed runs")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    lua = tmp / "signed.lua"
    lua.write_text(LUA)
    load_before = os.getloadavg()[0]
    bare, bare_url = start_bare(tmp)
    real, real_url = start_receiver(tmp, "real")
    servers = {"bare": (bare, bare_url), "real": (real, real_url)}
    runs: dict[str, list[dict[str, float]]] = {"bare": [], "real": []}
    fixed: dict[str, list[dict[str, float]]] = {"bare": [], "real": []}
    wrk = {"seconds": args.seconds, "connections": args.connections, "threads": args.threads}
    try:
        for r in range(args.rounds):
            for name, (proc, url) in servers.items():
                reqs = tmp / f"{name}-{r}.tsv"
                make_requests(reqs, args.requests, f"{name}-{r}")
                runs[name].append(measured(proc, url, reqs, lua, delay_ms=0, **wrk))
                reqs.unlink()
        conns = 20
        for name, (proc, url) in servers.items():
            reqs = tmp / f"{name}-fixed.tsv"
            make_requests(reqs, args.rate * (args.seconds * 2 + 4) + 5000, f"{name}-fixed")
            delay = calibrated_delay(proc, url, reqs, lua, args.rate, conns)
            fixed[name].append(
                measured(
                    proc,
                    url,
                    reqs,
                    lua,
                    seconds=args.seconds,
                    connections=conns,
                    threads=1,
                    delay_ms=delay,
                )
            )
        rss = peak_rss_mb(real.pid)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait()
    ratios = [rl["rps"] / b["rps"] for b, rl in zip(runs["bare"], runs["real"], strict=True)]
    print(
        f"load average before: {load_before:.2f}, after: {os.getloadavg()[0]:.2f},"
        f" cpus: {os.cpu_count()}"
    )
    print("| run | req/s | p50 ms | p99 ms | server CPU µs/req | errors |")
    print("|---|---|---|---|---|---|")
    for name in ("bare", "real"):
        for i, res in enumerate(runs[name]):
            _row(f"{name} max #{i + 1}", res)
    for name in ("bare", "real"):
        _row(f"{name} at ~{args.rate} req/s offered", fixed[name][0])
    print(
        f"\nratio real/bare per pair: {', '.join(f'{x:.2f}' for x in ratios)};"
        f" median {median(ratios):.2f}"
    )
    cpu_ratio = median(
        [b["cpu_us"] / rl["cpu_us"] for b, rl in zip(runs["bare"], runs["real"], strict=True)]
    )
    print(f"CPU per request bare/real (median of pairs): {cpu_ratio:.2f}")
    print(f"receiver peak RSS: {rss:.1f} MB")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _row(name: str, r: dict[str, float]) -> None:
    print(
        f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
        f"| {r.get('cpu_us', 0):.0f} | {int(r['errors'])} |"
    )


if __name__ == "__main__":
    sys.exit(main())
