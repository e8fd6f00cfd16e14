"""Admin listener, metrics and the CLI against a running server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from receiver.store import Route, SQLiteStore
from tests.harness import (
    ADMIN_TOKEN,
    SECRET,
    ReceiverProcess,
    base_config,
    event_body,
    signed_headers,
    stored_event,
)

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReceiverProcess]:
    tmp = tmp_path_factory.mktemp("admin")
    with ReceiverProcess(tmp, base_config(tmp)) as proc:
        yield proc


def make_dead_letters(server: ReceiverProcess, n: int, prefix: str, sink: str) -> None:
    """Dead letters for a sink this server does not run, made through the store."""

    async def run() -> None:
        store = SQLiteStore(server.tmp / "spool.db")
        await store.open()
        try:
            await store.ensure_cursors([Route(sink, ("*",))])
            for i in range(n):
                await store.ingest(
                    stored_event(f"{prefix}-{i}", event_type="rule.patch_applied", sinks=(sink,))
                )
            # The sink is gone from the config: what it still had becomes dead letters.
            await store.retire_sink(sink, "permanent: test", now=time.time())
        finally:
            await store.close()

    asyncio.run(run())


def cli(server: ReceiverProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "receiver", *args, "--config", str(server.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=server.tmp,
        env=os.environ,
    )


def test_admin_needs_token(server: ReceiverProcess) -> None:
    """/admin/* answers 401 without, or with a wrong, Bearer token."""
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
    ):
        resp = httpx.get(f"{server.admin_url}/admin/dead-letters", headers=headers)
        assert resp.status_code == 401
        assert resp.json()["error"] == "unauthorized"
        resp = httpx.post(f"{server.admin_url}/admin/dead-letters/retry", headers=headers, json={})
        assert resp.status_code == 401


def test_dead_letters_list_retry_purge_over_http(server: ReceiverProcess) -> None:
    """Dead letters are listable, re-queueable and purgeable through the admin API."""
    make_dead_letters(server, 3, "http-dl", "ghost-http")
    resp = httpx.get(
        f"{server.admin_url}/admin/dead-letters", headers=AUTH, params={"sink": "ghost-http"}
    )
    rows = [r for r in resp.json()["dead_letters"] if r["event_id"].startswith("http-dl")]
    assert len(rows) == 3
    assert rows[0]["error"] == "permanent: test"
    resp = httpx.post(
        f"{server.admin_url}/admin/dead-letters/retry", headers=AUTH, json={"ids": [rows[0]["id"]]}
    )
    assert resp.json() == {"requeued": 1}
    resp = httpx.post(
        f"{server.admin_url}/admin/dead-letters/purge",
        headers=AUTH,
        json={"ids": [rows[1]["id"], rows[2]["id"]]},
    )
    assert resp.json() == {"purged": 2}
    left = httpx.get(f"{server.admin_url}/admin/dead-letters", headers=AUTH).json()["dead_letters"]
    assert not [r for r in left if r["event_id"].startswith("http-dl")]
    bad = httpx.post(
        f"{server.admin_url}/admin/dead-letters/retry", headers=AUTH, json={"ids": "all"}
    )
    assert bad.status_code == 400


def test_metrics(server: ReceiverProcess) -> None:
    """/metrics exposes received, accepted, duplicates, rejections, sink and latency series."""
    body = event_body("evt-metrics")
    httpx.post(server.url, content=body, headers=signed_headers(body))
    httpx.post(server.url, content=body, headers=signed_headers(body))
    httpx.post(server.url, content=body, headers={"Content-Type": "text/plain"})
    server.wait_exported(1)
    time.sleep(0.2)
    text = httpx.get(f"{server.admin_url}/metrics").text
    for series in (
        "bighub_siem_requests_total",
        "bighub_siem_events_accepted_total",
        "bighub_siem_events_duplicate_total 1.0",
        'bighub_siem_requests_rejected_total{reason="unsupported_media_type"}',
        'bighub_siem_sink_delivered_total{sink="console"}',
        'bighub_siem_sink_pending{sink="console"} 0.0',
        'bighub_siem_sink_dead{sink="console"}',
        "bighub_siem_sink_oldest_pending_age_seconds",
        "bighub_siem_ingest_seconds_bucket",
        'bighub_siem_sink_up{sink="console"} 1.0',
        "bighub_siem_spool_bytes",
    ):
        assert series in text, series
    assert ADMIN_TOKEN not in text
    assert SECRET not in text


def test_send_test_gets_202s_and_events_reach_stdout(server: ReceiverProcess) -> None:
    """`send-test` signs sample events; the server accepts them and exports them."""
    before = len(server.exported())
    out = cli(server, "send-test", "--url", server.url, "--count", "3")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(" 202 ") == 3
    types = {r["event_type"] for r in server.wait_exported(before + 3)[before:]}
    assert types == {"decision_event.created", "rule.patch_applied", "approval.created"}
    assert SECRET not in out.stdout + out.stderr


def test_send_test_reports_refusals(server: ReceiverProcess, tmp_path: Path) -> None:
    """send-test with the wrong secret exits 1 and shows the 401 answers."""
    secret_file = tmp_path / "wrong"
    secret_file.write_text("wrong-secret-0123456789")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "receiver",
            "send-test",
            "--url",
            server.url,
            "--secret",
            f"file:{secret_file}",
            "--count",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "401" in out.stdout


def test_dead_letters_cli_while_server_runs(server: ReceiverProcess) -> None:
    """`dead-letters list|retry|purge` work against the store of a running server."""
    make_dead_letters(server, 2, "cli-dl", "ghost-cli")
    listed = cli(server, "dead-letters", "list", "--sink", "ghost-cli")
    assert listed.returncode == 0
    assert listed.stdout.count("cli-dl-") == 2
    refused = cli(server, "dead-letters", "purge")
    assert refused.returncode == 2
    retried = cli(server, "dead-letters", "retry", "--sink", "ghost-cli", "--all")
    assert retried.returncode == 0
    assert "requeued 2" in retried.stdout
    assert "cli-dl-" not in cli(server, "dead-letters", "list", "--sink", "ghost-cli").stdout


def test_second_serve_on_same_spool_refused(server: ReceiverProcess, tmp_path: Path) -> None:
    """A second serve process on the same SQLite spool exits with a clear error."""
    cfg = dict(server.cfg)
    cfg = {
        **cfg,
        "ingress": {**cfg["ingress"], "port": 0},
        "admin": {**cfg["admin"], "enabled": False},
    }
    other = ReceiverProcess(tmp_path, cfg)
    with pytest.raises(RuntimeError, match="in use by another serve process"):
        other.start(timeout=15)


def test_python_m_receiver_is_the_cli() -> None:
    """`python -m receiver --help` lists every command."""
    out = subprocess.run(
        [sys.executable, "-m", "receiver", "--help"], capture_output=True, text=True, timeout=30
    )
    for cmd in ("serve", "check-config", "send-test", "dead-letters"):
        assert cmd in out.stdout


def test_graceful_stop(tmp_path: Path) -> None:
    """SIGTERM drains and exits 0."""
    proc = ReceiverProcess(tmp_path, base_config(tmp_path)).start()
    body = event_body("evt-term")
    assert httpx.post(proc.url, content=body, headers=signed_headers(body)).status_code == 202
    proc.wait_exported(1)
    assert proc.stop() == 0
    assert "service_stopped" in proc.stderr_path.read_text()
