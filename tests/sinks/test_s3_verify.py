"""verify-archive: a clean archive passes; each kind of tampering is reported; the real
CLI on an archive written by ``serve``."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from receiver import signatures
from sinks.s3 import S3Config, S3Sink, VerifyReport, verify_archive
from sinks.s3._client import api_for
from sinks.s3.manifest import sign_manifest
from tests.harness import ROOT, SECRET, ReceiverProcess, base_config, event_body, signed_headers
from tests.services.moto import MotoServer, moto_server, s3_bucket
from tests.sinks.s3_support import (
    archived,
    data_keys,
    keypair,
    make_event,
    manifest_keys,
    s3_config,
)

pytestmark = pytest.mark.integration
KEYS = keypair()


@dataclass
class Archive:
    moto: MotoServer
    bucket: str
    cfg: S3Config

    @property
    def client(self) -> Any:
        return self.moto.client()

    def verify(self) -> VerifyReport:
        return verify_archive(
            api_for(self.cfg), prefix="audit", public_key=KEYS.private.public_key()
        )

    def manifest(self, sequence: int) -> tuple[str, dict[str, Any]]:
        key = manifest_keys(self.client, self.bucket)[::-1][sequence]
        return key, json.loads(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def kinds(self) -> list[tuple[str, str]]:
        return sorted((f.kind, f.key) for f in self.verify().findings)


@pytest.fixture
def archive(moto_server: MotoServer, s3_bucket: Callable[..., str]) -> Archive:
    """Three sink lifetimes: three manifests over six objects (no Object Lock, to tamper)."""
    bucket = s3_bucket()
    cfg = s3_config(moto_server, bucket, KEYS)

    async def write() -> None:
        for start in (1, 10, 20):
            sink = S3Sink(cfg)
            await sink.start()
            await sink.send(
                [
                    make_event(start),
                    make_event(start + 1, "rule.patch_applied"),
                    make_event(start + 2),
                ]
            )
            await sink.close()

    asyncio.run(write())
    return Archive(moto_server, bucket, cfg)


def test_clean_archive_verifies(archive: Archive) -> None:
    """No findings; the counts and the head describe the whole chain."""
    report = archive.verify()
    assert report.ok
    assert (report.manifests, report.objects, report.events) == (3, 6, 9)
    assert report.head == archive.manifest(2)[1]["manifest"]["chain"]["head"]


def test_deleted_object_is_reported(archive: Archive) -> None:
    """An object the chain names but the bucket lacks: missing_object."""
    victim = data_keys(archive.client, archive.bucket)[2]
    archive.client.delete_object(Bucket=archive.bucket, Key=victim)
    assert archive.kinds() == [("missing_object", victim)]


def test_modified_object_is_reported(archive: Archive) -> None:
    """Changed bytes under a chained key (a dropped event): altered_object."""
    victim = data_keys(archive.client, archive.bucket)[0]
    data = archive.client.get_object(Bucket=archive.bucket, Key=victim)["Body"].read()
    fewer = b"\n".join(gzip.decompress(data).splitlines()[:-1]) + b"\n"
    archive.client.put_object(Bucket=archive.bucket, Key=victim, Body=gzip.compress(fewer))
    assert archive.kinds() == [("altered_object", victim)]


def test_inserted_object_is_reported(archive: Archive) -> None:
    """An object no manifest names (planted or orphaned): unchained_object."""
    key = "audit/decision/dt=2026-11-24/hour=08/planted.ndjson.gz"
    archive.client.put_object(Bucket=archive.bucket, Key=key, Body=gzip.compress(b"{}\n"))
    assert archive.kinds() == [("unchained_object", key)]


def test_reordered_manifests_are_reported(archive: Archive) -> None:
    """Two genuine manifests swapped between keys: each is misplaced."""
    (key0, body0), (key1, body1) = archive.manifest(0), archive.manifest(1)
    for key, body in ((key0, body1), (key1, body0)):
        archive.client.put_object(Bucket=archive.bucket, Key=key, Body=json.dumps(body).encode())
    findings = archive.kinds()
    assert ("misplaced_manifest", key0) in findings
    assert ("misplaced_manifest", key1) in findings
    # Their objects are then named by no valid manifest.
    assert {kind for kind, _ in findings} == {"misplaced_manifest", "unchained_object"}


def test_forged_manifest_is_reported(archive: Archive) -> None:
    """An edited manifest (hash of a swapped object) fails its signature: forged_manifest."""
    key, outer = archive.manifest(1)
    outer["manifest"]["entries"][0]["sha256"] = "0" * 64
    archive.client.put_object(Bucket=archive.bucket, Key=key, Body=json.dumps(outer).encode())
    findings = archive.kinds()
    assert ("forged_manifest", key) in findings
    assert {kind for kind, _ in findings} == {"forged_manifest", "unchained_object"}


def test_manifest_resigned_with_another_key_is_reported(archive: Archive) -> None:
    """A manifest signed by anyone but the archive's key is forged, whatever it says."""
    key, outer = archive.manifest(2)
    data, _ = sign_manifest(outer["manifest"], Ed25519PrivateKey.generate())
    archive.client.put_object(Bucket=archive.bucket, Key=key, Body=data)
    [finding] = [f for f in archive.verify().findings if f.kind == "forged_manifest"]
    assert finding.key == key
    assert "does not verify" in finding.detail


def test_deleted_manifest_is_reported(archive: Archive) -> None:
    """A gap in the manifest sequence: missing_manifest, and its objects unchained."""
    key, _ = archive.manifest(1)
    archive.client.delete_object(Bucket=archive.bucket, Key=key)
    findings = archive.kinds()
    assert ("missing_manifest", "sequence 1") in findings
    assert {kind for kind, _ in findings} == {"missing_manifest", "unchained_object"}


def test_manifest_copied_from_another_prefix_is_reported(
    archive: Archive, s3_bucket: Callable[..., str]
) -> None:
    """A genuine manifest of another archive (same key) does not pass for this one."""
    other = s3_config(archive.moto, archive.bucket, KEYS, prefix="elsewhere")

    async def write_other() -> None:
        sink = S3Sink(other)
        await sink.start()
        await sink.send([make_event(99)])
        await sink.close()

    asyncio.run(write_other())
    [foreign] = manifest_keys(archive.client, archive.bucket, "elsewhere/")
    body = archive.client.get_object(Bucket=archive.bucket, Key=foreign)["Body"].read()
    newest, _ = archive.manifest(2)
    planted = newest.replace("999999999997", "999999999996")  # claims to be sequence 3
    archive.client.put_object(Bucket=archive.bucket, Key=planted, Body=body)
    assert ("misplaced_manifest", planted) in archive.kinds()


# -- the CLI --------------------------------------------------------------------------


def cli(
    archive_bucket: str, moto: MotoServer, public_key: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "receiver",
            "verify-archive",
            "--bucket",
            archive_bucket,
            "--prefix",
            "audit",
            "--public-key",
            str(public_key),
            "--endpoint-url",
            moto.endpoint,
            "--region",
            "us-east-1",
            *extra,
        ],
        env=moto.env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_exit_codes_follow_findings(archive: Archive, tmp_path: Path) -> None:
    """0 and a summary when clean; 1 with one line per finding; 2 for a bad key file."""
    public = tmp_path / "archive.pub"
    public.write_bytes(KEYS.public_pem)
    clean = cli(archive.bucket, archive.moto, public)
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.startswith("archive ok: 3 manifest(s), 6 object(s), 9 event(s)")
    victim = data_keys(archive.client, archive.bucket)[1]
    archive.client.delete_object(Bucket=archive.bucket, Key=victim)
    tampered = cli(archive.bucket, archive.moto, public)
    assert tampered.returncode == 1
    assert f"missing_object: {victim}: " in tampered.stdout
    assert "1 finding(s)" in tampered.stdout
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key")
    assert cli(archive.bucket, archive.moto, bad).returncode == 2


def test_archive_written_by_serve_verifies_from_the_cli(
    tmp_path: Path, moto_server: MotoServer, s3_bucket: Callable[..., str]
) -> None:
    """End to end: signed webhooks into `serve`, archived to S3, verified by the CLI, and
    one archived event re-verified with the webhook secret."""
    bucket = s3_bucket(object_lock=True)
    key_file = tmp_path / "signing.pem"
    key_file.write_text(KEYS.private_pem)
    public = tmp_path / "archive.pub"
    public.write_bytes(KEYS.public_pem)
    cfg = base_config(
        tmp_path,
        sinks=[
            {
                "name": "archive",
                "type": "s3",
                "bucket": bucket,
                "prefix": "audit",
                "region": "us-east-1",
                "endpoint_url": moto_server.endpoint,
                "signing_key": f"file:{key_file}",
                "object_lock_mode": "GOVERNANCE",
                "retention_days": 1,
                "batch_max_wait_seconds": 0.2,
            }
        ],
    )
    bodies = [event_body(f"evt_serve_{i}", "decision_event.created") for i in range(5)]
    with ReceiverProcess(tmp_path, cfg, env=moto_server.env()) as receiver:
        for body in bodies:
            answer = httpx.post(
                receiver.url, content=body, headers=signed_headers(body), timeout=10
            )
            assert answer.status_code == 202
        deadline = time.monotonic() + 20
        while len(list(archived(moto_server.client(), bucket))) < 5:
            assert time.monotonic() < deadline, receiver.stderr_path.read_text()[-2000:]
            time.sleep(0.1)
    result = cli(bucket, moto_server, public)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 event(s)" in result.stdout
    _, line = next(iter(archived(moto_server.client(), bucket)))
    proof = line["proof"]
    raw = base64.b64decode(proof["body_b64"])
    assert raw in bodies
    signatures.verify(
        raw,
        signature=proof["signature"],
        timestamp=proof["timestamp"],
        secrets=[SECRET.encode()],
        tolerance_seconds=10**9,
        now=time.time,
    )


def test_planted_manifest_name_far_ahead_is_reported_cheaply(archive: Archive) -> None:
    """A junk manifest claiming sequence 999999999999 is forged, not a trillion gaps."""
    key = "audit/_manifests/000000000000.json"
    archive.client.put_object(Bucket=archive.bucket, Key=key, Body=b"{}")
    assert archive.kinds() == [("forged_manifest", key)]
