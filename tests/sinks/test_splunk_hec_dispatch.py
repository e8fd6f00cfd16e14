"""End to end: signed webhooks -> ingress -> SQLite spool -> real dispatcher -> HEC sink
-> emulator. In-process ``Service`` for most tests, a real ``serve`` process for the
restart with pending acks.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from receiver.admin import create_admin_app
from receiver.app import create_app
from receiver.service import Service
from receiver.settings import load_settings
from tests.fakes.hec import TOKEN, HecEmulator, hec, hec_ack
from tests.harness import ReceiverProcess, base_config, event_body, signed_headers
from tests.sinks._hec import anyio_backend, assert_indexed_once

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def hec_sink(url: str, tmp: Path, **extra: Any) -> dict[str, Any]:
    return {
        "name": "hec",
        "type": "splunk_hec",
        "url": url,
        "token": TOKEN,
        "batch_max_wait_seconds": 0,
        "retry_initial_seconds": 0.05,
        "retry_max_seconds": 0.2,
        "ack_state_path": str(tmp / "hec-ack.json"),
        **extra,
    }


class Receiver:
    """An in-process service with its ingress app on an ASGI transport."""

    def __init__(self, service: Service, client: httpx.AsyncClient) -> None:
        self.service, self.client = service, client

    async def post(self, event_ids: list[str], **extra: Any) -> None:
        for event_id in event_ids:
            body = event_body(event_id, actor="agent:refund-bot", decision="blocked", **extra)
            resp = await self.client.post(
                "/webhooks/bighub", content=body, headers=signed_headers(body)
            )
            assert resp.status_code == 202, resp.text

    async def pending(self) -> int:
        stats = await self.service.store.stats()
        return stats.sinks["hec"].pending if "hec" in stats.sinks else 0

    async def dead_ids(self) -> list[str]:
        return sorted(d.event_id for d in await self.service.store.dead_letters(sink="hec"))

    async def readyz(self) -> dict[str, Any]:
        # The admin listener's /readyz: it carries each sink's detail for operators.
        admin = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_admin_app(self.service)), base_url="http://a"
        )
        async with admin:
            body = (await admin.get("/readyz")).json()
        assert isinstance(body, dict)
        return body

    async def wait(self, check: Callable[[], Any], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0.02)


@asynccontextmanager
async def receiver(tmp: Path, sink: dict[str, Any]) -> AsyncIterator[Receiver]:
    settings = load_settings(data=base_config(tmp, sinks=[sink]))
    service = Service(settings)
    await service.start()
    app = create_app(service, manage_service=False)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
            yield Receiver(service, client)
    finally:
        await service.stop()


async def test_poison_and_413_split_through_the_dispatcher(tmp_path: Path) -> None:
    """Batches split on 413, poison events are dead letters, every other one indexed once."""
    # About six encoded events fit in 4,000 bytes; batches wait up to 0.5 s to fill,
    # so whatever pace the posts below take, requests of more than six events occur.
    emulator = HecEmulator(max_content_length=4_000).start()
    try:
        emulator.poison_ids = {"evt-7": 6, "evt-33": 13, "evt-90": 15}
        event_ids = [f"evt-{i}" for i in range(120)]
        sink = hec_sink(
            emulator.url,
            tmp_path,
            compression="none",
            batch_max_events=50,
            batch_max_wait_seconds=0.5,
        )
        async with receiver(tmp_path, sink) as rx:
            await rx.post(event_ids)
            await rx.wait(lambda: _done(rx, 3))
            assert await rx.dead_ids() == ["evt-33", "evt-7", "evt-90"]
            assert (await rx.readyz())["sinks"]["hec"]["up"] is True
        assert 413 in [r.status for r in emulator.event_posts()]
        assert_indexed_once(emulator, [e for e in event_ids if e not in emulator.poison_ids])
    finally:
        emulator.stop()


async def _done(rx: Receiver, dead: int) -> bool:
    return await rx.pending() == 0 and len(await rx.dead_ids()) == dead


async def test_auth_hold_keeps_events_pending_until_the_token_is_fixed(
    hec: HecEmulator, tmp_path: Path
) -> None:
    """Disabled token: nothing dead-lettered (even past max_attempts), sink unhealthy with
    the reason in /readyz; re-enabled: everything delivered once."""
    hec.token().enabled = False
    event_ids = [f"evt-{i}" for i in range(25)]
    async with receiver(tmp_path, hec_sink(hec.url, tmp_path, max_attempts=2)) as rx:
        await rx.post(event_ids)
        await rx.wait(lambda: len(hec.event_posts()) >= 4)  # well past max_attempts
        ready = await rx.readyz()
        assert ready["sinks"]["hec"]["up"] is False
        assert "token is disabled" in ready["sinks"]["hec"]["detail"]
        assert TOKEN not in json.dumps(ready)
        assert rx.service.metrics.snapshot.sink_up["hec"] is False
        assert await rx.pending() == 25
        assert await rx.dead_ids() == []
        assert hec.event_ids() == []

        hec.token().enabled = True
        await rx.wait(lambda: _done(rx, 0))
        assert (await rx.readyz())["sinks"]["hec"]["up"] is True
    assert_indexed_once(hec, event_ids)


async def test_busy_hec_is_retried_until_it_takes_the_events(
    hec: HecEmulator, tmp_path: Path
) -> None:
    """Code 9 retries with backoff; nothing lost, nothing twice."""
    hec.inject.extend([9, 9, 9])
    event_ids = [f"evt-{i}" for i in range(10)]
    async with receiver(tmp_path, hec_sink(hec.url, tmp_path)) as rx:
        await rx.post(event_ids)
        await rx.wait(lambda: _done(rx, 0))
    assert [r.code for r in hec.event_posts()][:3] == [9, 9, 9]
    assert_indexed_once(hec, event_ids)


async def test_lost_ack_is_resent_through_the_dispatcher(
    hec_ack: HecEmulator, tmp_path: Path
) -> None:
    """ack = true, HEC loses a request: after ack_timeout the rows go again, once."""
    hec_ack.lose_acks = 1
    event_ids = [f"evt-{i}" for i in range(30)]
    sink = hec_sink(
        hec_ack.url, tmp_path, ack=True, ack_timeout_seconds=0.3, ack_poll_interval_seconds=0.05
    )
    async with receiver(tmp_path, sink) as rx:
        await rx.post(event_ids)
        await rx.wait(lambda: _done(rx, 0))
    assert_indexed_once(hec_ack, event_ids)
    assert len({e.ack_id for e in hec_ack.snapshot()}) >= 1


def _pending_metric(admin_url: str) -> float | None:
    try:
        text = httpx.get(f"{admin_url}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    match = re.search(r'^bighub_siem_sink_pending\{sink="hec"\} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else None


def _wait_sync(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def test_serve_killed_with_pending_acks_delivers_once_after_restart(tmp_path: Path) -> None:
    """SIGKILL while acks are outstanding; HEC indexes meanwhile; the restarted receiver
    confirms the saved ackIds instead of re-sending: every event indexed exactly once."""
    emulator = HecEmulator(ack=True).start()
    try:
        emulator.acks_paused = True
        state = tmp_path / "hec-ack.json"
        sink = hec_sink(emulator.url, tmp_path, ack=True, ack_poll_interval_seconds=0.05)
        sink["batch_max_wait_seconds"] = 0.3  # the posts below land in one or two batches
        cfg = base_config(tmp_path, sinks=[sink])
        proc = ReceiverProcess(tmp_path, cfg)
        event_ids = [f"evt-{i}" for i in range(20)]
        with proc:
            for event_id in event_ids:
                body = event_body(event_id)
                resp = httpx.post(proc.url, content=body, headers=signed_headers(body), timeout=5)
                assert resp.status_code == 202
            _wait_sync(lambda: state.exists() and bool(json.loads(state.read_text())["records"]))
            posts = len(emulator.event_posts())
            proc.kill(signal.SIGKILL)
        assert emulator.event_ids() == []  # nothing indexed yet: acks paused
        emulator.release_acks()  # HEC indexes what it had while the receiver is down
        with ReceiverProcess(tmp_path, cfg) as again:
            _wait_sync(lambda: _pending_metric(again.admin_url) == 0.0)
            ready = httpx.get(f"{again.base_url}/readyz", timeout=2).json()
            assert ready["sinks"]["hec"]["up"] is True
        assert "splunk_hec_ack_recovered" in again.stderr_path.read_text()
        assert TOKEN not in again.stderr_path.read_text()
        assert_indexed_once(emulator, event_ids)
        # The events of the saved ackIds were not posted a second time.
        sent = sum(r.events for r in emulator.event_posts() if r.status == 200)
        assert sent == len(event_ids)
        assert len(emulator.event_posts()) >= posts
    finally:
        emulator.stop()
