"""``bighub-siem check-config --probe`` against the test services, for every sink type:
each destination is contacted once, each failure is named, the exit code says whether
any failed, and no secret is printed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sinks import sink_types
from tests.fakes.azure import CLIENT_SECRET, DCR_ID, Azure, azure
from tests.fakes.hec import TOKEN, HecEmulator, hec
from tests.fakes.s3_unconditional import UnconditionalS3, unconditional_s3
from tests.harness import base_config, write_config
from tests.services.moto import SECRET_KEY, MotoServer, moto_server, s3_bucket
from tests.services.tansu import Tansu, tansu, tansu_auth
from tests.sinks.lake_support import lake_values, parquet_keys
from tests.sinks.s3_support import data_keys, keypair, s3_table

pytestmark = pytest.mark.integration
KEYS = keypair()
PASSWORD = "kafka-password-never-printed-42"


def probe(tmp_path: Path, sinks: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    path = write_config(tmp_path / "probe.toml", base_config(tmp_path, sinks=sinks))
    return subprocess.run(
        [sys.executable, "-m", "receiver", "check-config", "--probe", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "KAFKA_PASSWORD": PASSWORD},
    )


def lines(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """sink name -> its probe line."""
    found = {}
    for line in result.stdout.splitlines():
        if line.startswith("probe "):
            found[line.split()[1]] = line
    return found


def kafka(broker: Tansu, **extra: Any) -> dict[str, Any]:
    return {
        "name": "kafka",
        "type": "kafka",
        "bootstrap_servers": [broker.bootstrap],
        "request_timeout_ms": 3000,
        "delivery_timeout_ms": 6000,
        **extra,
    }


def splunk(emulator: HecEmulator, **extra: Any) -> dict[str, Any]:
    return {"name": "splunk", "type": "splunk_hec", "url": emulator.url, "token": TOKEN, **extra}


def s3(endpoint: str, bucket: str, **extra: Any) -> dict[str, Any]:
    return s3_table(endpoint, bucket, KEYS, read_timeout_seconds=5.0, **extra)


def test_every_sink_type_probes_ok_against_its_service(
    tansu: Tansu,
    hec: HecEmulator,
    moto_server: MotoServer,
    s3_bucket: Callable[..., str],
    azure: Azure,
    tmp_path: Path,
) -> None:
    """stdout, Kafka (tansu), Splunk HEC (emulator), S3 and Security Lake (moto),
    Sentinel (Entra ID and Logs Ingestion emulators): one ok line each, exit 0, nothing
    sent (no event indexed, no topic created, no object, no row)."""
    bucket = s3_bucket()
    lake_bucket = s3_bucket()
    sinks = [
        {"name": "console", "type": "stdout"},
        kafka(tansu),
        splunk(hec),
        s3(moto_server.endpoint, bucket),
        lake_values(moto_server, lake_bucket, KEYS),
        azure.sink_config(),
    ]
    assert {s["type"] for s in sinks} == set(sink_types())
    result = probe(tmp_path, sinks)
    assert result.returncode == 0, result.stdout + result.stderr
    found = lines(result)
    assert sorted(found) == ["archive", "console", "kafka", "lake", "sentinel", "splunk"]
    assert all(": ok" in line for line in found.values()), found
    assert "not created yet: bighub.approval" in found["kafka"]
    assert hec.event_ids() == []
    assert tansu.topics() == set()
    assert data_keys(moto_server.client(), bucket) == []
    assert parquet_keys(moto_server.client(), lake_bucket) == []
    assert azure.dce.event_ids() == []


def test_each_failure_is_named_and_the_exit_code_is_1(
    tansu_auth: Tansu,
    hec: HecEmulator,
    moto_server: MotoServer,
    unconditional_s3: UnconditionalS3,
    s3_bucket: Callable[..., str],
    tmp_path: Path,
) -> None:
    """A bad SASL password, a bad HEC token, a missing bucket and a store without
    conditional writes: each sink's line names its reason; secrets are never printed."""
    sinks = [
        {"name": "console", "type": "stdout"},
        kafka(
            tansu_auth,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="bighub",
            sasl_password="env:KAFKA_PASSWORD",
        ),
        splunk(hec, token="00000000-0000-0000-0000-000000000000"),
        s3(moto_server.endpoint, "no-such-bucket-anywhere"),
        {**s3(unconditional_s3.endpoint, s3_bucket()), "name": "archive2"},
    ]
    started = time.monotonic()
    result = probe(tmp_path, sinks)
    assert result.returncode == 1, result.stdout + result.stderr
    found = lines(result)
    assert ": ok" in found["console"]
    assert "FAILED" in found["kafka"]
    assert "SASL authentication failed (SCRAM-SHA-512)" in found["kafka"]
    assert "FAILED" in found["splunk"]
    assert "(Invalid token)" in found["splunk"]
    assert "check the token" in found["splunk"]
    assert "FAILED" in found["archive"]
    assert "the bucket does not exist" in found["archive"]
    assert "FAILED" in found["archive2"]
    assert "does not honour conditional writes" in found["archive2"]
    assert time.monotonic() - started < 60  # the sinks are probed side by side
    everything = result.stdout + result.stderr
    for secret in (PASSWORD, "00000000-0000-0000-0000-000000000000", SECRET_KEY):
        assert secret not in everything


def test_sentinel_missing_role_assignment_is_named(azure: Azure, tmp_path: Path) -> None:
    """A Sentinel app registration without its role on the DCR: the probe says which role
    is missing where, and never prints the client secret."""
    azure.dce.revoke(azure.principal, DCR_ID)
    result = probe(tmp_path, [azure.sink_config()])
    assert result.returncode == 1, result.stdout + result.stderr
    line = lines(result)["sentinel"]
    assert "FAILED" in line
    assert "Monitoring Metrics Publisher" in line
    assert CLIENT_SECRET not in result.stdout + result.stderr


def test_without_probe_nothing_is_contacted(tmp_path: Path) -> None:
    """Plain check-config does no I/O: a sink pointing nowhere still validates (exit 0)."""
    path = write_config(
        tmp_path / "c.toml",
        base_config(
            tmp_path,
            sinks=[
                {
                    "name": "splunk",
                    "type": "splunk_hec",
                    "url": "https://127.0.0.1:1",
                    "token": TOKEN,
                }
            ],
        ),
    )
    result = subprocess.run(
        [sys.executable, "-m", "receiver", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "probe " not in result.stdout
