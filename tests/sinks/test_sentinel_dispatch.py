"""End to end: signed webhooks -> a real ``serve`` process -> dispatcher -> Sentinel sink
(real Azure clients) -> the Logs Ingestion emulator, including kill -9 mid-send.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.azure import Azure, azure
from tests.harness import (
    ADMIN_TOKEN,
    ReceiverProcess,
    SignedLoad,
    base_config,
    event_body,
    signed_headers,
)

pytestmark = pytest.mark.integration


def receiver_config(azure: Azure, tmp: Path, **sink: Any) -> dict[str, Any]:
    table = azure.sink_config(
        batch_max_events=50,
        batch_max_wait_seconds=0,
        retry_initial_seconds=0.05,
        retry_max_seconds=0.5,
        **sink,
    )
    return base_config(tmp, sinks=[table])


def post(proc: ReceiverProcess, event_ids: list[str], **extra: Any) -> None:
    with httpx.Client(timeout=5) as client:
        for event_id in event_ids:
            body = event_body(event_id, actor="agent:refund-bot", decision="blocked", **extra)
            resp = client.post(proc.url, content=body, headers=signed_headers(body))
            assert resp.status_code == 202, resp.text


def wait_for(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def dead_letters(proc: ReceiverProcess) -> list[dict[str, Any]]:
    resp = httpx.get(
        f"{proc.admin_url}/admin/dead-letters",
        params={"sink": "sentinel"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=5,
    )
    resp.raise_for_status()
    rows = resp.json()["dead_letters"]
    assert isinstance(rows, list)
    return rows


def test_kill_9_mid_send_then_every_acknowledged_event_is_in_sentinel(
    azure: Azure, tmp_path: Path, record_property: Any
) -> None:
    """Webhooks keep coming while rows are posted; SIGKILL while calls are in flight (the
    service ingests, then answers late). After restart every 2xx event is in the table;
    repeats (rows the service took whose answer the killed process never read) are
    counted and reported, and carry the same EventId."""
    azure.dce.stall_after_ingest_seconds = 0.3
    proc = ReceiverProcess(tmp_path, receiver_config(azure, tmp_path)).start()
    load = SignedLoad(
        proc.url, workers=4, prefix="kill", per_worker=3000, actor="agent:a", decision="blocked"
    ).start()
    wait_for(lambda: len(load.acknowledged) >= 400 and len(azure.dce.ok_calls()) >= 3)
    proc.kill()  # SIGKILL while a call is stalled after ingest: no shutdown code runs
    acknowledged = load.stop()
    in_flight_at_kill = len(azure.dce.event_ids())
    azure.dce.stall_after_ingest_seconds = 0

    with ReceiverProcess(tmp_path, proc.cfg):
        wait_for(lambda: acknowledged <= set(azure.dce.event_ids()), timeout=60)
    rows = Counter(azure.dce.event_ids())
    missing = acknowledged - set(rows)
    assert not missing, f"{len(missing)} acknowledged events never reached Sentinel"
    assert set(rows) <= acknowledged | {f"kill-{w}-{n}" for w in range(4) for n in range(3000)}
    duplicates = sum(c - 1 for c in rows.values())
    record_property("sentinel_rows", sum(rows.values()))
    record_property("sentinel_duplicates", duplicates)
    print(
        f"\nkill -9 mid-send: {len(acknowledged)} acknowledged, {sum(rows.values())} rows, "
        f"{duplicates} duplicate rows (same EventId), {in_flight_at_kill} rows stored at kill"
    )
    # Only calls in flight at the kill can repeat: at most a few batches of 50.
    assert duplicates <= 4 * 50


def test_refused_record_is_the_only_dead_letter_and_throttling_charges_nothing(
    azure: Azure, tmp_path: Path
) -> None:
    """A 429 storm (max_attempts = 2) dead-letters nothing; a record the service refuses
    is dead-lettered alone, with the reason, and the rest of its batch is delivered."""
    azure.dce.fail_next(429, "TooManyRequests", times=6, retry_after="0.2")
    azure.dce.refuse = lambda row: row.get("EventId") == "evt-poison"
    ids = [f"evt-{i}" for i in range(20)] + ["evt-poison"] + [f"evt-{i}" for i in range(20, 30)]
    with ReceiverProcess(tmp_path, receiver_config(azure, tmp_path, max_attempts=2)) as proc:
        post(proc, ids)
        wait_for(lambda: len(set(azure.dce.event_ids())) == 30)
        wait_for(lambda: len(dead_letters(proc)) == 1)
        dead = dead_letters(proc)
    assert [d["event_id"] for d in dead] == ["evt-poison"]
    assert "refused this event's row alone" in dead[0]["error"]
    assert sorted(set(azure.dce.event_ids())) == sorted(i for i in ids if i != "evt-poison")
    assert sum(1 for c in azure.dce.calls if c.status == 429) == 6
