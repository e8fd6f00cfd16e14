"""kill -9 under load: every event that got a 2xx is exported after restart."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.harness import ReceiverProcess, base_config, event_body, signed_headers

pytestmark = pytest.mark.integration


def test_kill_9_mid_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """Signed requests from 6 threads, SIGKILL mid-load, restart: all 2xx events exported."""
    proc = ReceiverProcess(tmp_path, base_config(tmp_path)).start()
    acknowledged: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def sender(worker: int) -> None:
        with httpx.Client(timeout=5) as client:
            for n in range(5000):  # bounded; the kill ends the run much sooner
                if stop.is_set():
                    return
                event_id = f"crash-{worker}-{n}"
                body = event_body(event_id)
                try:
                    resp = client.post(proc.url, content=body, headers=signed_headers(body))
                except httpx.HTTPError:
                    continue  # no answer: BIGHUB would retry; nothing was promised
                if resp.status_code in (200, 202):
                    with lock:
                        acknowledged.add(event_id)

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 300 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()  # SIGKILL mid-load: no shutdown code runs
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert len(acknowledged) >= 300

    restarted = ReceiverProcess(tmp_path, proc.cfg)
    with restarted:
        deadline = time.monotonic() + 30
        exported: set[str] = set()
        while time.monotonic() < deadline:
            exported = {r["event_id"] for r in restarted.exported()}
            if acknowledged <= exported:
                break
            time.sleep(0.1)
    missing = acknowledged - exported
    assert not missing, (
        f"{len(missing)} acknowledged events never exported, e.g. {sorted(missing)[:5]}"
    )
