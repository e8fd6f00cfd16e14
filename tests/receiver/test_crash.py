"""kill -9 under load: every event that got a 2xx is exported after restart."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.harness import ReceiverProcess, SignedLoad, base_config

pytestmark = pytest.mark.integration


def test_kill_9_mid_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """Signed requests from 6 threads, SIGKILL mid-load, restart: all 2xx events exported."""
    proc = ReceiverProcess(tmp_path, base_config(tmp_path)).start()
    load = SignedLoad(proc.url, workers=6, prefix="crash").start()
    deadline = time.monotonic() + 30
    while len(load.acknowledged) < 300 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()  # SIGKILL mid-load: no shutdown code runs
    acknowledged = load.stop()
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
