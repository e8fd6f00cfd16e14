"""Ingest throughput through the real server: SQLite spool vs PostgreSQL store.

    python tests/bench/bench_store.py [--duration 15] [--connections 16,64] [--threads 2]

For each store and connection count: start ``bighub-siem serve`` (role all, one
stdout sink with its default batches exporting meanwhile, as in production), drive
it with the same ``wrk`` run of pre-signed, unique events (wrk cannot sign), then
read the accepted counter from /metrics to prove every request was a new event
stored durably. Needs ``wrk`` (``apt-get install -y wrk``) and, for PostgreSQL,
the server named by BIGHUB_SIEM_TEST_POSTGRES_URL.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from receiver import signatures  # noqa: E402
from tests.harness import SECRET, ReceiverProcess, base_config  # noqa: E402
from tests.services.postgres import DEFAULT_URL, ENV, schema_url  # noqa: E402

# Each wrk thread takes every n-th line (no two threads send the same event) and
# builds a POST from it; headers are pre-computed because wrk's Lua cannot HMAC.
LUA = r"""
local counter, threads = 0, {}
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end
function init(args)
  local path, nthreads = args[1], tonumber(args[2])
  lines, i = {}, 0
  local n = 0
  for line in io.lines(path) do
    if n % nthreads == id then table.insert(lines, line) end
    n = n + 1
  end
end
function request()
  i = i + 1
  local line = lines[((i - 1) % #lines) + 1]
  local ts, sig, body = line:match("^(%d+)\t([^\t]+)\t(.*)$")
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["X-BIGHUB-Timestamp"] = ts,
    ["X-BIGHUB-Signature"] = sig,
  }, body)
end
"""


def write_requests(path: Path, count: int) -> None:
    ts = int(time.time())
    run = uuid.uuid4().hex[:8]
    with path.open("w") as fh:
        for i in range(count):
            body = (
                f'{{"event_id":"bench_{run}_{i}","event_type":"decision_event.created",'
                f'"created_at":"2026-11-24T08:00:00Z","decision":"blocked","risk_score":0.91,'
                f'"actor":"agent:refund-bot","action":{{"tool":"refund_payment","amount":1250}}}}'
            ).encode()
            sig = signatures.signature_header(SECRET, ts, body)
            fh.write(f"{ts}\t{sig}\t{body.decode()}\n")


def accepted(proc: ReceiverProcess) -> int:
    text = httpx.get(f"{proc.admin_url}/metrics", timeout=10).text
    match = re.search(r"^bighub_siem_events_accepted_total (\S+)$", text, re.M)
    return int(float(match.group(1))) if match else -1


def peak_rss_mb(proc: ReceiverProcess) -> str:
    """The server's peak resident memory (Linux /proc), in MB."""
    if proc.proc is None:
        return "?"
    try:
        status = Path(f"/proc/{proc.proc.pid}/status").read_text()
    except OSError:
        return "?"
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    return f"{int(match.group(1)) / 1024:.0f}" if match else "?"


def run_wrk(
    url: str, script: Path, requests: Path, threads: int, conns: int, secs: int
) -> dict[str, str]:
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{conns}",
            f"-d{secs}s",
            "--latency",
            "-s",
            str(script),
            url,
            "--",
            str(requests),
            str(threads),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=secs + 60,
    ).stdout
    result = {"rps": re.search(r"Requests/sec:\s+(\S+)", out).group(1)}  # type: ignore[union-attr]
    result["requests"] = re.search(r"(\d+) requests in", out).group(1)  # type: ignore[union-attr]
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        result[f"p{pct}"] = m.group(1) if m else "?"
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non2xx"] = errors.group(1) if errors else "0"
    return result


def postgres_schema(base: str) -> tuple[str, str]:
    import psycopg

    schema = f"bighub_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return schema, schema_url(base, schema)


def drop_schema(base: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def bench(kind: str, conns: int, args: argparse.Namespace, work: Path) -> dict[str, str]:
    tmp = Path(tempfile.mkdtemp(dir=work))
    pg_base = os.environ.get(ENV, DEFAULT_URL)
    schema = None
    store: dict[str, object] = {"max_spool_events": 10_000_000, "max_spool_bytes": 8 * 1024**3}
    if kind == "postgresql":
        schema, store["url"] = postgres_schema(pg_base)
    cfg = base_config(
        tmp,
        store=store,
        log={"format": "json", "level": "info"},
        # Export runs meanwhile with the default batches, as in production. (Holding it
        # back cannot be done for a whole run: a batch is at most 100,000 events, which
        # a run reaches in 15 s, and one such batch is ~300 MB of Python objects.)
        sinks=[{"name": "console", "type": "stdout"}],
    )
    requests = tmp / "requests.tsv"
    write_requests(requests, args.events)
    script = tmp / "signed.lua"
    script.write_text(LUA)
    proc = ReceiverProcess(tmp, cfg).start()
    try:
        result = run_wrk(proc.url, script, requests, args.threads, conns, args.duration)
        result["accepted"] = str(accepted(proc))
        result["rss"] = peak_rss_mb(proc)
    finally:
        proc.stop()
        if schema is not None:
            drop_schema(pg_base, schema)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--connections", default="16,64")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--events", type=int, default=150_000, help="pre-signed unique events per run")
    ap.add_argument("--stores", default="sqlite,postgresql")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    print(f"# load average before: {os.getloadavg()[0]:.2f}, cpus: {os.cpu_count()}")
    print(
        "| store | connections | requests/s | p50 | p99 | requests | accepted (202) | non-2xx"
        " | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench-store-") as work:
        for conns in [int(c) for c in args.connections.split(",")]:
            for kind in args.stores.split(","):
                r = bench(kind, conns, args, Path(work))
                print(
                    f"| {kind} | {conns} | {r['rps']} | {r['p50']} | {r['p99']} | {r['requests']}"
                    f" | {r['accepted']} | {r['non2xx']} | {r['rss']} |",
                    flush=True,
                )
    print(f"# load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
