"""The S3 sink driven by the real dispatcher and SQLite spool: batching by count, bytes
and age; a crash between the PUT and the outbox commit; S3 unreachable."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

from receiver.dispatcher import Dispatcher
from receiver.metrics import Metrics
from receiver.service import Service
from receiver.settings import load_settings
from receiver.store import IngestOutcome, NewEvent, SQLiteStore
from sinks.s3 import S3Config, S3Sink, verify_archive
from sinks.s3._client import api_for
from tests.harness import ROOT, SECRET
from tests.services.moto import ACCESS_KEY, REGION, SECRET_KEY, MotoServer, moto_server, s3_bucket
from tests.services.tcp_proxy import tcp_proxy
from tests.sinks.s3_support import (
    archived,
    data_keys,
    keypair,
    manifest_keys,
    new_event,
    read_lines,
    s3_config,
)

pytestmark = pytest.mark.integration
KEYS = keypair()


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        await asyncio.sleep(0.05)


async def ingest(store: SQLiteStore, events: list[NewEvent]) -> None:
    results = await asyncio.gather(*(store.ingest(e) for e in events))
    assert {r.outcome for r in results} == {IngestOutcome.ACCEPTED}


async def pending(store: SQLiteStore, sink: str = "archive") -> tuple[int, int]:
    stats = (await store.stats()).sinks.get(sink)
    return (stats.pending, stats.dead) if stats else (0, 0)


def line_counts(moto: MotoServer, bucket: str) -> list[int]:
    client = moto.client()
    return [len(read_lines(client, bucket, k)) for k in data_keys(client, bucket)]


async def run_dispatcher(
    tmp: Path, cfg: S3Config, events: list[NewEvent], until: tuple[int, int]
) -> float:
    """Run the real dispatcher until the spool shows ``until`` (pending, dead); return when.

    Waiting on the spool, not on the bucket, lets a transient S3 error and its retry
    happen on the way without failing the test.
    """
    store = SQLiteStore(tmp / "spool.db")
    await store.open()
    dispatcher = Dispatcher(S3Sink(cfg), cfg, store, Metrics(), poll_seconds=0.05)
    dispatcher.start()
    try:
        await ingest(store, events)

        async def reached() -> bool:
            return await pending(store) == until

        await wait_for(reached)
        return time.time()
    finally:
        await dispatcher.stop()
        await store.close()


def test_batches_close_at_max_events(
    tmp_path: Path, moto_server: MotoServer, s3_bucket: Callable[..., str]
) -> None:
    """Full batches go out at once; the remainder waits for its age (300 s here)."""
    bucket = s3_bucket()
    cfg = s3_config(moto_server, bucket, KEYS, batch_max_events=10, batch_max_wait_seconds=300)
    asyncio.run(run_dispatcher(tmp_path, cfg, [new_event(i) for i in range(25)], (5, 0)))
    assert line_counts(moto_server, bucket) == [10, 10]


def test_batches_close_at_max_bytes(
    tmp_path: Path, moto_server: MotoServer, s3_bucket: Callable[..., str]
) -> None:
    """A batch holds no more body bytes than batch_max_bytes (one event beyond: next batch)."""
    bucket = s3_bucket()
    pad = 480 - len(new_event(0).body)  # bodies of 480 bytes: four fit in 2048, five do not
    cfg = s3_config(moto_server, bucket, KEYS, batch_max_bytes=2048, batch_max_wait_seconds=0.2)
    events = [new_event(i, pad=pad) for i in range(12)]
    assert {len(e.body) for e in events} == {480}
    asyncio.run(run_dispatcher(tmp_path, cfg, events, (0, 0)))
    assert line_counts(moto_server, bucket) == [4, 4, 4]


def test_batches_close_at_max_age(
    tmp_path: Path, moto_server: MotoServer, s3_bucket: Callable[..., str]
) -> None:
    """A batch far from full goes out once its oldest event has waited the max wait."""
    bucket = s3_bucket()
    cfg = s3_config(moto_server, bucket, KEYS, batch_max_events=1000, batch_max_wait_seconds=1.0)
    events = [new_event(i) for i in range(3)]
    stored_at = min(e.received_at for e in events)
    delivered_at = asyncio.run(run_dispatcher(tmp_path, cfg, events, (0, 0)))
    assert delivered_at - stored_at >= 1.0
    assert line_counts(moto_server, bucket) == [3]


# -- crash between the PUT and the outbox commit --------------------------------------


def _events(first: int, count: int) -> list[NewEvent]:
    """Events over two categories and two hours, so one batch spans several objects."""
    kinds = ["decision_event.created", "rule.patch_applied"]
    hours = ["2026-11-24T08:10:00Z", "2026-11-24T09:10:00Z"]
    return [
        new_event(n, kinds[n % 2], created_at=hours[(n // 2) % 2])
        for n in range(first, first + count)
    ]


def _sink_values(moto: MotoServer, bucket: str, **overrides: Any) -> dict[str, Any]:
    return {
        "name": "archive",
        "type": "s3",
        "bucket": bucket,
        "prefix": "audit",
        "region": REGION,
        "endpoint_url": moto.endpoint,
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
        "signing_key": KEYS.private_pem,
        "batch_max_wait_seconds": 0.2,
        **overrides,
    }


@pytest.mark.parametrize(
    ("stored", "first_limit", "late", "restart_limit"),
    [
        pytest.param(30, 100, 30, 100, id="retry-batch-holds-more"),
        pytest.param(40, 40, 5, 15, id="retry-batches-hold-fewer"),
    ],
)
def test_crash_between_put_and_outbox_commit_archives_each_event_once(
    tmp_path: Path,
    moto_server: MotoServer,
    s3_bucket: Callable[..., str],
    stored: int,
    first_limit: int,
    late: int,
    restart_limit: int,
) -> None:
    """SIGKILL after the objects and manifest were written, before the commit; a restart
    re-sends the batch (with more or fewer events): same keys, no second copy, no loss."""
    bucket = s3_bucket()
    spool = tmp_path / "spool.db"

    async def store_events(events: list[NewEvent]) -> None:
        store = SQLiteStore(spool)
        await store.open()
        await ingest(store, events)
        await store.close()

    asyncio.run(store_events(_events(0, stored)))
    env = {
        **os.environ,
        "S3_CRASH_CONFIG": json.dumps(
            _sink_values(moto_server, bucket, batch_max_events=first_limit)
        ),
    }
    child = subprocess.run(
        [sys.executable, "-m", "tests.sinks.s3_crash_child", str(spool)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    claimed = [
        json.loads(x) for x in child.stdout.decode().splitlines() if x.startswith('{"claimed"')
    ]
    assert claimed == [{"claimed": min(stored, first_limit)}]

    client = moto_server.client()
    before = {
        key: client.get_object(Bucket=bucket, Key=key)["Body"].read()
        for key in data_keys(client, bucket)
    }
    crashed_events = {line["event_id"]: key for key, line in archived(client, bucket)}
    assert len(crashed_events) == min(stored, first_limit)
    assert len(before) == 4  # two categories x two hours

    async def restart() -> tuple[int, int]:
        await store_events(_events(stored, late))  # more arrived while it was down
        settings = load_settings(
            data={
                "ingress": {"secrets": [SECRET]},
                "store": {"url": f"sqlite:///{spool}"},
                "admin": {"enabled": False},
                "sinks": [_sink_values(moto_server, bucket, batch_max_events=restart_limit)],
            }
        )
        service = Service(settings)
        await service.start()
        try:

            async def drained() -> bool:
                return await pending(service.store) == (0, 0)

            await wait_for(drained, timeout=30)
        finally:
            await service.stop()
        return len(manifest_keys(client, bucket)), 0

    manifests, _ = asyncio.run(restart())
    lines = list(archived(client, bucket))
    ids = Counter(line["event_id"] for _, line in lines)
    assert set(ids) == {f"evt_{n:06d}" for n in range(stored + late)}  # nothing lost
    assert set(ids.values()) == {1}  # nothing twice
    for key, data in before.items():  # the crashed batch's objects, untouched
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    for key, line in lines:  # and its events only there
        if line["event_id"] in crashed_events:
            assert key == crashed_events[line["event_id"]]
    report = verify_archive(
        api_for(s3_config(moto_server, bucket, KEYS)),
        prefix="audit",
        public_key=KEYS.private.public_key(),
    )
    assert report.findings == ()
    assert report.events == stored + late
    assert manifests >= 2


# -- S3 unreachable ----------------------------------------------------------------------


def test_s3_unreachable_holds_events_uncharged_until_it_returns(
    tmp_path: Path, moto_server: MotoServer, s3_bucket: Callable[..., str]
) -> None:
    """With S3 cut off, sends fail as unavailable (no attempt charged, nothing dead) and
    every event is archived once S3 is reachable again."""
    bucket = s3_bucket()

    async def scenario() -> list[dict[str, Any]]:
        with tcp_proxy(moto_server.port) as proxy, structlog.testing.capture_logs() as logs:
            cfg = s3_config(
                proxy.endpoint,
                bucket,
                KEYS,
                batch_max_events=10,
                batch_max_wait_seconds=0.05,
                retry_initial_seconds=0.05,
                retry_max_seconds=0.2,
                max_attempts=2,  # had the outage been charged, the events would be dead
                connect_timeout_seconds=1.0,
            )
            store = SQLiteStore(tmp_path / "spool.db")
            await store.open()
            dispatcher = Dispatcher(S3Sink(cfg), cfg, store, Metrics(), poll_seconds=0.05)
            dispatcher.start()
            try:
                await ingest(store, [new_event(i) for i in range(10)])

                async def drained() -> bool:
                    return await pending(store) == (0, 0)

                await wait_for(drained)
                proxy.cut()
                await ingest(store, [new_event(i) for i in range(10, 30)])

                async def refused_three_times() -> bool:
                    return (
                        sum(
                            1
                            for e in logs
                            if e["event"] == "delivery_attempt"
                            and e["outcome"] == "SinkUnavailableError"
                        )
                        >= 3
                    )

                await wait_for(refused_three_times)
                assert not dispatcher.up
                assert "unreachable" in dispatcher.detail
                assert await pending(store) == (20, 0)
                proxy.restore()
                await wait_for(drained)
                assert dispatcher.up
            finally:
                await dispatcher.stop()
                await store.close()
            return list(logs)

    asyncio.run(scenario())
    ids = Counter(line["event_id"] for _, line in archived(moto_server.client(), bucket))
    assert ids == Counter({f"evt_{n:06d}": 1 for n in range(30)})
