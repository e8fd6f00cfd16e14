"""The Security Lake sink against moto (S3 + STS): layout, one class per object, read back
with pyarrow and DuckDB, exactly once across retries, restarts and a kill -9, the role."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from receiver import cli
from receiver.service import Service
from receiver.settings import load_settings
from receiver.store import IngestOutcome, SQLiteStore
from sinks import Event
from sinks.ocsf import CloudContext, Mapper, OcsfMapping
from sinks.ocsf._schema import API_ACTIVITY, ENTITY_MANAGEMENT
from sinks.security_lake import SecurityLakeConfig, SecurityLakeSink
from sinks.security_lake._arrow import schema_for
from sinks.security_lake.encoder import ParquetFormat
from tests.harness import ROOT, SECRET, free_port, stored_event
from tests.services.moto import REGION, MotoServer, moto_server, s3_bucket
from tests.sinks.lake_support import (
    ACCOUNT,
    API_SOURCE,
    ENTITY_SOURCE,
    EXTERNAL_ID,
    ROLE_ARN,
    lake_values,
    parquet_keys,
    read_object,
    stored_ids,
)
from tests.sinks.ocsf_support import approval, decision, event_from, rule
from tests.sinks.s3_support import keypair, run_sink

pytestmark = pytest.mark.integration
KEYS = keypair()
DAY1 = "2026-03-01T10:00:00.000+00:00"
DAY2 = "2026-03-02T09:30:00.000+00:00"


def _config(moto: MotoServer, bucket: str, **overrides: Any) -> SecurityLakeConfig:
    return SecurityLakeConfig.model_validate(lake_values(moto, bucket, KEYS, **overrides))


async def _deliver(cfg: SecurityLakeConfig, *batches: Sequence[Event]) -> None:
    await run_sink(SecurityLakeSink(cfg), *batches)


def _batch() -> list[Event]:
    return [
        event_from(decision("blocked"), seq=1, event_id="d1", occurred_at=DAY2),
        event_from(decision("allowed"), seq=2, event_id="d2", occurred_at=DAY1),
        event_from(approval("approval.created"), seq=3, event_id="a1", occurred_at=DAY1),
        event_from(rule(), seq=4, event_id="r1", occurred_at=DAY1),
        event_from(decision("requires_approval"), seq=5, event_id="d3", occurred_at=DAY1),
    ]


def _verify(moto: MotoServer, bucket: str, prefix: str, tmp_path: Path) -> tuple[int, str]:
    """``bighub-siem verify-archive`` on one source prefix, as an auditor runs it."""
    key_file = tmp_path / "lake.pub"
    key_file.write_bytes(KEYS.public_pem)
    proc = subprocess.run(
        [
            sys.executable, "-m", "receiver", "verify-archive", "--bucket", bucket,
            "--prefix", prefix, "--public-key", str(key_file), "--endpoint-url", moto.endpoint,
            "--region", REGION,
        ],
        env=moto.env(), cwd=ROOT, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    return proc.returncode, proc.stdout.decode() + proc.stderr.decode()


def test_layout_one_class_per_object_and_the_declared_schema(
    moto_server: MotoServer, s3_bucket: Callable[..., str], tmp_path: Path
) -> None:
    """Keys follow ext/<source>/region=/accountId=/eventDay=; each object holds one class,
    in time order, with its class's schema; pyarrow and DuckDB read it back."""
    bucket = s3_bucket()
    cfg = _config(moto_server, bucket)
    asyncio.run(_deliver(cfg, _batch()))
    client = moto_server.client()
    keys = parquet_keys(client, bucket)
    base = f"region={REGION}/accountId={ACCOUNT}"
    assert [k.rsplit("/", 1)[0] for k in keys] == [
        f"ext/{API_SOURCE}/{base}/eventDay=20260301",
        f"ext/{API_SOURCE}/{base}/eventDay=20260302",
        f"ext/{ENTITY_SOURCE}/{base}/eventDay=20260301",
    ]
    for key in keys:
        table = read_object(client, bucket, key)
        event_class = ENTITY_MANAGEMENT if ENTITY_SOURCE in key else API_ACTIVITY
        assert table.schema.equals(schema_for(event_class, "1.1.0"), check_metadata=False)
        assert set(table.column("class_uid").to_pylist()) == {event_class.uid}
        times = table.column("time").to_pylist()
        assert times == sorted(times)
    day1 = read_object(client, bucket, keys[0])
    assert [m["uid"] for m in day1.column("metadata").to_pylist()] == ["d2", "a1", "d3"]

    local = tmp_path / "lake"
    for key in keys:
        (local / key).parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, key, str(local / key))
    files = f"{local}/ext/{API_SOURCE}/**/*.parquet"
    con = duckdb.connect()
    described = {
        row[0]: row[1]
        for row in con.sql(
            f"DESCRIBE SELECT * FROM read_parquet('{files}', hive_partitioning = false)"
        ).fetchall()
    }
    assert list(described) == schema_for(API_ACTIVITY, "1.1.0").names
    assert described["time"] == "BIGINT"
    assert described["class_uid"] == "INTEGER"
    assert described["unmapped"] == "MAP(VARCHAR, VARCHAR)"
    rows = con.sql(
        f"""SELECT metadata.uid, actor.authorizations[1].decision, eventDay,
                   unmapped['action'], cloud.account.uid
            FROM read_parquet('{files}', hive_partitioning = true, hive_types_autocast = false)
            ORDER BY time"""
    ).fetchall()
    assert rows == [
        ("d2", "Allowed", "20260301", '{"amount":1250,"currency":"EUR"}', ACCOUNT),
        ("a1", "Delayed", "20260301", None, ACCOUNT),
        ("d3", "Delayed", "20260301", '{"amount":1250,"currency":"EUR"}', ACCOUNT),
        ("d1", "Blocked", "20260302", '{"amount":1250,"currency":"EUR"}', ACCOUNT),
    ]
    for source in (API_SOURCE, ENTITY_SOURCE):
        code, out = _verify(moto_server, bucket, f"ext/{source}", tmp_path)
        assert code == 0, out
        assert "archive ok" in out


def test_writes_go_through_each_sources_role_assumed_with_the_external_id(
    moto_server: MotoServer, s3_bucket: Callable[..., str]
) -> None:
    """The sink asks STS for each source's provider role with the configured external id."""
    bucket = s3_bucket()
    session = f"bighub-{free_port()}"
    entity_role = ROLE_ARN.replace("bighub-", "bighub-entity-")
    cfg = _config(
        moto_server,
        bucket,
        role_session_name=session,
        source_roles={"entity_management": entity_role},
    )
    asyncio.run(_deliver(cfg, _batch()))
    data = httpx.get(f"{moto_server.endpoint}/moto-api/data.json", timeout=10).json()
    roles = {
        (r["role_arn"], r["external_id"])
        for r in data["sts"]["AssumedRole"]
        if r["session_name"] == session
    }
    assert roles == {(ROLE_ARN, EXTERNAL_ID), (entity_role, EXTERNAL_ID)}


def test_retries_and_restarts_recognise_the_objects_already_written(
    moto_server: MotoServer, s3_bucket: Callable[..., str], tmp_path: Path
) -> None:
    """The same events again (same process, new process, bigger batch) add only new ones."""
    bucket = s3_bucket()
    cfg = _config(moto_server, bucket)
    batch = _batch()
    asyncio.run(_deliver(cfg, batch, batch))
    more = [*batch, event_from(decision("allowed"), seq=6, event_id="d4", occurred_at=DAY1)]
    asyncio.run(_deliver(cfg, more))  # a restart whose first batch holds one more event
    ids = Counter(uid for _, uid in stored_ids(moto_server.client(), bucket))
    assert ids == Counter(["d1", "d2", "a1", "r1", "d3", "d4"])
    assert _verify(moto_server, bucket, f"ext/{API_SOURCE}", tmp_path)[0] == 0


def test_object_left_by_a_crash_before_its_manifest_is_adopted(
    moto_server: MotoServer, s3_bucket: Callable[..., str], tmp_path: Path
) -> None:
    """A Parquet object PUT just before a crash (no manifest yet) is recognised and chained."""
    bucket = s3_bucket()
    cfg = _config(moto_server, bucket)
    mapper = Mapper(OcsfMapping(), "1.1.0", cloud=CloudContext(REGION, ACCOUNT))
    fmt = ParquetFormat(mapper, API_ACTIVITY, region=REGION, account=ACCOUNT)
    crashed = [e for e in _batch() if e.category == "decision" and e.occurred_at == DAY1]
    orphan = fmt.encode(f"ext/{API_SOURCE}/", fmt.split(crashed)[0][0], crashed)
    moto_server.client().put_object(Bucket=bucket, Key=orphan.key, Body=orphan.data)
    asyncio.run(_deliver(cfg, _batch()))
    keys = parquet_keys(moto_server.client(), bucket)
    assert orphan.key in keys
    assert Counter(uid for _, uid in stored_ids(moto_server.client(), bucket)) == Counter(
        ["d1", "d2", "a1", "r1", "d3"]
    )
    assert _verify(moto_server, bucket, f"ext/{API_SOURCE}", tmp_path)[0] == 0


def test_health_reports_the_bucket_and_the_role(
    moto_server: MotoServer, s3_bucket: Callable[..., str]
) -> None:
    """health() is ok when the role and prefixes answer, says why when they do not."""
    cfg = _config(moto_server, s3_bucket())
    assert asyncio.run(SecurityLakeSink(cfg).health()).ok
    down = _config(
        moto_server,
        "nobucket-here",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        sts_endpoint_url=f"http://127.0.0.1:{free_port()}",
    )
    health = asyncio.run(SecurityLakeSink(down).health())
    assert not health.ok
    assert "sts:AssumeRole" in health.detail


# -- kill -9 between the PUT and the commit -----------------------------------------------


def _stored(first: int, count: int) -> list[Any]:
    """Decisions and rules over two days, so a batch spans several objects and sources."""
    # 10:00 UTC two days ago and yesterday: recent enough for max_age_seconds.
    midnight = time.time() // 86_400 * 86_400
    days = [midnight - 2 * 86_400 + 36_000, midnight - 86_400 + 36_000]
    out = []
    for n in range(first, first + count):
        kind = ("decision_event.created", "rule.patch_applied")[n % 2]
        body = json.dumps({"event_id": f"evt_{n:04d}", "event_type": kind, "decision": "blocked"})
        out.append(
            stored_event(
                f"evt_{n:04d}",
                sinks=("lake",),
                event_type=kind,
                body=body.encode(),
                received_at=days[(n // 2) % 2] + n,
            )
        )
    return out


async def _store(spool: Path, events: list[Any]) -> None:
    store = SQLiteStore(spool)
    await store.open()
    try:
        results = await asyncio.gather(*(store.ingest(e) for e in events))
        assert {r.outcome for r in results} == {IngestOutcome.ACCEPTED}
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("stored", "first_limit", "late", "restart_limit"),
    [
        pytest.param(30, 30, 30, 60, id="retry-batch-holds-more"),
        pytest.param(40, 40, 10, 10, id="retry-batches-hold-fewer"),
    ],
)
def test_kill_9_between_put_and_commit_stores_each_event_once(
    tmp_path: Path,
    moto_server: MotoServer,
    s3_bucket: Callable[..., str],
    stored: int,
    first_limit: int,
    late: int,
    restart_limit: int,
) -> None:
    """SIGKILL after a send was confirmed, before the dispatcher recorded it; the restart
    re-sends those events (with more or fewer around them): no second copy, no loss."""
    bucket = s3_bucket()
    spool = tmp_path / "spool.db"
    asyncio.run(_store(spool, _stored(0, stored)))
    values = lake_values(moto_server, bucket, KEYS, batch_max_events=first_limit)
    child = subprocess.run(
        [sys.executable, "-m", "tests.sinks.lake_crash_child", str(spool)],
        env={**os.environ, "LAKE_CRASH_CONFIG": json.dumps(values)},
        cwd=ROOT,
        capture_output=True,
        timeout=90,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    assert json.loads(child.stdout.decode().splitlines()[-1]) == {"sent": first_limit}
    client = moto_server.client()
    before = {
        k: client.get_object(Bucket=bucket, Key=k)["Body"].read()
        for k in parquet_keys(client, bucket)
    }
    assert len(before) == 4  # two classes x two days
    crashed = {uid: key for key, uid in stored_ids(client, bucket)}
    assert len(crashed) == first_limit

    async def restart() -> None:
        await _store(spool, _stored(stored, late))  # more arrived while it was down
        settings = load_settings(
            data={
                "ingress": {"secrets": [SECRET]},
                "store": {"url": f"sqlite:///{spool}"},
                "admin": {"enabled": False},
                "sinks": [{**values, "batch_max_events": restart_limit}],
            }
        )
        service = Service(settings)
        await service.start()
        try:
            deadline = time.monotonic() + 60
            while len(stored_ids(client, bucket)) < stored + late:
                assert time.monotonic() < deadline, "the restart did not deliver everything"
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)  # a duplicate would show up here
        finally:
            await service.stop()

    asyncio.run(restart())
    rows = stored_ids(client, bucket)
    ids = Counter(uid for _, uid in rows)
    assert set(ids) == {f"evt_{n:04d}" for n in range(stored + late)}  # nothing lost
    assert set(ids.values()) == {1}  # nothing twice
    for key, data in before.items():  # the crashed batch's objects, untouched
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    for key, uid in rows:
        if uid in crashed:
            assert key == crashed[uid]
    for source in (API_SOURCE, ENTITY_SOURCE):
        code, out = _verify(moto_server, bucket, f"ext/{source}", tmp_path)
        assert code == 0, out
