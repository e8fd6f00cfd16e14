"""Outage and recovery end to end: a real receiver process, the real bighub client,
the fake BIGHUB control plane delivering signed events to the receiver."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.bighub_api import API_KEY, FakeBighub, bighub_api
from tests.harness import ADMIN_TOKEN, ReceiverProcess, base_config, event_body

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _receiver(tmp: Path, api: FakeBighub, **upstream: Any) -> tuple[ReceiverProcess, str]:
    cfg = base_config(tmp)
    wid = api.add_webhook(f"http://127.0.0.1:{cfg['ingress']['port']}/webhooks/bighub")
    cfg["upstream"] = {
        "base_url": api.base_url,
        "api_key": "env:BIGHUB_API_KEY",
        "webhook_ids": [wid],
        "interval_seconds": 0,
        "lookback_limit": 1000,
        "max_replays_per_run": 1000,
        "replay_rate_per_second": 1000,
        "max_retries": 0,
        **upstream,
    }
    return ReceiverProcess(tmp, cfg, env={"BIGHUB_API_KEY": API_KEY}), wid


def _send(api: FakeBighub, wid: str, prefix: str, count: int) -> list[str]:
    ids = [f"{prefix}_{i:04d}" for i in range(count)]
    for event_id in ids:
        api.send(wid, event_body(event_id))
    return ids


def _exported_once(rp: ReceiverProcess, expected: set[str]) -> None:
    records = rp.wait_exported(len(expected), timeout=30)
    counts = collections.Counter(r["event_id"] for r in records)
    assert set(counts) == expected
    assert max(counts.values()) == 1


def test_outage_and_recovery_replays_exactly_the_missing_events(
    bighub_api: FakeBighub, tmp_path: Path
) -> None:
    """Receiver down for 200 events -> one run asks for exactly those; each exported once."""
    rp, wid = _receiver(tmp_path, bighub_api)
    with rp:
        before = _send(bighub_api, wid, "evt_before", 20)
        rp.wait_exported(20)
    # The outage: BIGHUB's deliveries fail (connection refused).
    missed = _send(bighub_api, wid, "evt_missed", 200)
    # This event's first delivery failed, but BIGHUB's own retry got through later:
    # its failed delivery must not be replayed.
    retried = bighub_api.send(wid, event_body("evt_retried"))
    assert retried.status == "failed"
    missed_deliveries = {str(d.id) for d in bighub_api.failed(wid)} - {str(retried.id)}
    assert len(missed_deliveries) == 200
    with rp:
        assert bighub_api.send(wid, event_body("evt_retried")).status == "delivered"
        resp = httpx.post(f"{rp.admin_url}/admin/replay", headers=AUTH, timeout=60)
        assert resp.status_code == 200
        report = resp.json()
        (w,) = report["webhooks"]
        assert report["ok"] is True
        assert (w["failed"], w["already_held"], w["to_replay"]) == (201, 1, 200)
        assert (w["replay_requested"], w["replay_succeeded"], w["replay_failed"]) == (200, 200, 0)
        asked = [d for hook, d in bighub_api.replay_requests if hook == wid]
        assert sorted(asked) == sorted(missed_deliveries)
        assert bighub_api.failed(wid) == [retried]
        _exported_once(rp, {*before, *missed, "evt_retried"})
        # A second run finds nothing left to do.
        again = httpx.post(f"{rp.admin_url}/admin/replay", headers=AUTH, timeout=60).json()
        assert again["totals"]["replay_requested"] == 0
        assert again["totals"]["already_held"] == 1


def test_serve_reconciles_at_start_up(bighub_api: FakeBighub, tmp_path: Path) -> None:
    """With interval_seconds > 0, serve runs once at start-up, after ingress listens."""
    rp, wid = _receiver(tmp_path, bighub_api, interval_seconds=3600)
    missed = _send(bighub_api, wid, "evt_missed", 30)
    assert len(bighub_api.failed(wid)) == 30
    with rp:
        _exported_once(rp, set(missed))
        assert bighub_api.failed(wid) == []
        metrics = httpx.get(f"{rp.admin_url}/metrics", timeout=5).text
    assert (
        f'bighub_siem_upstream_replays_total{{result="succeeded",webhook="{wid}"}} 30.0' in metrics
    )
    assert f'bighub_siem_upstream_failed_deliveries_seen_total{{webhook="{wid}"}} 30.0' in metrics
    assert "bighub_siem_upstream_last_run_timestamp 0.0" not in metrics


def test_admin_replay_needs_the_token_and_survives_api_errors(
    bighub_api: FakeBighub, tmp_path: Path
) -> None:
    """POST /admin/replay: 401 without the token; API errors answer a report, not a crash."""
    rp, wid = _receiver(tmp_path, bighub_api)
    _send(bighub_api, wid, "evt_missed", 3)
    url = f"{rp.admin_url}/admin/replay"
    with rp:
        assert httpx.post(url, timeout=5).status_code == 401
        wrong = {"Authorization": "Bearer not-the-token-000000000000"}
        assert httpx.post(url, headers=wrong, timeout=5).status_code == 401
        assert httpx.post(url, headers=AUTH, json=[1], timeout=5).status_code == 400
        bad_id = httpx.post(url, headers=AUTH, json={"webhook_id": "../x"}, timeout=5)
        assert bad_id.status_code == 400
        bighub_api.inject("deliveries", 500)
        broken = httpx.post(url, headers=AUTH, timeout=30).json()
        assert broken["ok"] is False
        assert broken["webhooks"][0]["error_kinds"] == ["server"]
        bighub_api.clear_faults()
        dry = httpx.post(url, headers=AUTH, json={"dry_run": True, "webhook_id": wid}, timeout=30)
        assert dry.json()["totals"]["to_replay"] == 3
        assert bighub_api.replay_requests == []
        assert httpx.get(f"{rp.base_url}/healthz", timeout=5).status_code == 200
        real = httpx.post(url, headers=AUTH, timeout=30).json()
        assert real["totals"]["replay_succeeded"] == 3
    assert "BIGHUB_API_KEY" not in rp.stderr_path.read_text()
    assert API_KEY not in rp.stderr_path.read_text()


def test_shutdown_does_not_wait_for_a_hanging_api_call(
    bighub_api: FakeBighub, tmp_path: Path
) -> None:
    """SIGTERM while the start-up run waits on BIGHUB: the receiver exits at once, cleanly."""
    rp, _wid = _receiver(tmp_path, bighub_api, interval_seconds=60, timeout_seconds=30)
    bighub_api.inject("deliveries", 0, delay=20)  # answers after 20 s
    with rp:
        deadline = time.monotonic() + 10
        while bighub_api.list_requests == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert bighub_api.list_requests == 1
        started = time.monotonic()
        assert rp.stop() == 0
        assert time.monotonic() - started < 5


def _cli(rp: ReceiverProcess, *args: str, key: str = API_KEY) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "receiver", "replay", "--config", str(rp.config_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=rp.tmp,
        env={**os.environ, "BIGHUB_API_KEY": key},
        check=False,
    )


def test_cli_replay_dry_run_prints_the_table(bighub_api: FakeBighub, tmp_path: Path) -> None:
    """`replay --dry-run` lists each failed delivery and what it would do; asks nothing."""
    rp, wid = _receiver(tmp_path, bighub_api)
    with rp:
        held = _send(bighub_api, wid, "evt_held", 2)
        rp.wait_exported(2)
    # One event held but its earlier delivery failed; three never arrived.
    bighub_api.send(wid, event_body(held[0]))
    _send(bighub_api, wid, "evt_missed", 3)
    started = time.monotonic()
    done = _cli(rp, "--dry-run", "--webhook-id", wid)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["WEBHOOK", "DELIVERY", "EVENT", "STATUS", "ACTION"]
    actions = collections.Counter(line.split()[-1] for line in lines[1:5])
    assert actions == {"would_replay": 3, "held": 1}
    assert any(line.startswith(f"{wid}: 6 deliveries, 4 failed, 1 already held") for line in lines)
    assert lines[-1].startswith("dry run:")
    assert bighub_api.replay_requests == []
    assert time.monotonic() - started < 20
    # Without a valid key the CLI reports the error and exits 1; the key is never shown.
    refused = _cli(rp, key="bh_wrong_key_0000000000")
    assert refused.returncode == 1
    assert "error: list deliveries: auth:" in refused.stdout
    assert "bh_wrong_key" not in refused.stdout + refused.stderr
