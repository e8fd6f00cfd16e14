"""The S3 sink against a real S3 protocol server (moto_server): layout, headers, Object
Lock, conditional writes, recovery of existing objects, the chain head, health."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

import pytest
from botocore.exceptions import ClientError

from sinks import Event, PartialDeliveryError, SinkError, SinkUnavailableError
from sinks.s3 import S3Config, S3Sink, verify_archive
from sinks.s3._client import api_for
from sinks.s3.encoder import Partition, encode_object
from tests.harness import free_port
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
T = TypeVar("T")
KEYS = keypair()


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def deliver(cfg: S3Config, *batches: Sequence[Event]) -> None:
    """Start a sink, send each batch, close it (one process lifetime)."""
    sink = S3Sink(cfg)
    await sink.start()
    try:
        for batch in batches:
            await sink.send(batch)
    finally:
        await sink.close()


def verified(cfg: S3Config) -> None:
    report = verify_archive(api_for(cfg), prefix=cfg.prefix, public_key=KEYS.private.public_key())
    assert report.findings == ()


def test_batch_is_written_one_object_per_partition(
    moto_server: MotoServer, s3_bucket: Callable[..., str]
) -> None:
    """Events land under category/dt=/hour= of their event time, one object each."""
    bucket = s3_bucket()
    cfg = s3_config(moto_server, bucket, KEYS)
    batch = [
        make_event(1, "decision_event.created", "2026-11-24T08:05:00.000+00:00"),
        make_event(2, "rule.patch_applied", "2026-11-24T08:06:00.000+00:00"),
        make_event(3, "decision_event.created", "2026-11-24T09:00:00.000+00:00"),
        make_event(4, "decision_event.created", "2026-11-24T08:59:00.000+00:00"),
        make_event(5, "approval.created", None, received_at=1_764_000_000.0),  # 2025-11-24T16
    ]
    run(deliver(cfg, batch))
    keys = data_keys(moto_server.client(), bucket)
    assert [k.rsplit("/", 1)[0] for k in keys] == [
        "audit/approval/dt=2025-11-24/hour=16",
        "audit/decision/dt=2026-11-24/hour=08",
        "audit/decision/dt=2026-11-24/hour=09",
        "audit/rule/dt=2026-11-24/hour=08",
    ]
    lines = list(archived(moto_server.client(), bucket))
    by_seq = {line["seq"]: key for key, line in lines}
    assert by_seq[1] == by_seq[4]
    assert len(lines) == 5
    assert keys[1].endswith(".ndjson.gz")
    assert "00000000000000000001-00000000000000000004-" in keys[1]
    sent = {e.seq: e for e in batch}
    for _, line in lines:
        assert base64.b64decode(line["proof"]["body_b64"]) == sent[line["seq"]].body
        assert line["event_type"] == sent[line["seq"]].event_type
    assert len(manifest_keys(moto_server.client(), bucket)) == 1
    verified(cfg)


def test_sse_storage_class_and_checksum_are_set_on_every_object(
    moto_server: MotoServer, s3_bucket: Callable[..., str]
) -> None:
    """Data objects carry SSE-KMS, the storage class and their SHA-256; manifests too."""
    bucket = s3_bucket()
    kms = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    cfg = s3_config(
        moto_server,
        bucket,
        KEYS,
        server_side_encryption="aws:kms",
        kms_key_id=kms,
        storage_class="STANDARD_IA",
    )
    run(deliver(cfg, [make_event(1), make_event(2)]))
    client = moto_server.client()
    [key] = data_keys(client, bucket)
    head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == kms
    assert head["StorageClass"] == "STANDARD_IA"
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(body).digest()).decode()
    [manifest] = manifest_keys(client, bucket)
    mhead = client.head_object(Bucket=bucket, Key=manifest)
    assert mhead["ServerSideEncryption"] == "aws:kms"
    assert mhead.get("StorageClass", "STANDARD") == "STANDARD"


def test_aes256_is_the_default_encryption(
    moto_server: MotoServer, s3_bucket: Callable[..., str]
) -> None:
    """Without settings, objects are stored with SSE-S3 (AES256)."""
    bucket = s3_bucket()
    run(deliver(s3_config(moto_server, bucket, KEYS), [make_event(1)]))
    [key] = data_keys(moto_server.client(), bucket)
    assert (
        moto_server.client().head_object(Bucket=bucket, Key=key)["ServerSideEncryption"] == "AES256"
    )


def test_object_lock_retention_is_set_and_deletes_are_refused(
    moto_server: MotoServer, s3_bucket: Callable[..., str]
) -> None:
    """COMPLIANCE retention is on every object; deleting a locked version fails."""
    bucket = s3_bucket(object_lock=True)
    cfg = s3_config(moto_server, bucket, KEYS, object_lock_mode="COMPLIANCE", retention_days=30)
    before = time.time()
    run(deliver(cfg, [make_event(1), make_event(2)]))
    client = moto_server.client()
    for key in data_keys(client, bucket) + manifest_keys(client, bucket):
        head = client.head_object(Bucket=bucket, Key=key)
        assert head["ObjectLockMode"] == "COMPLIANCE"
        until = head["ObjectLockRetainUntilDate"].astimezone(timezone.utc)
        expected = datetime.fromtimestamp(before + 30 * 86400, tz=timezone.utc)
        assert abs((until - expected).total_seconds()) < 120
        with pytest.raises(ClientError) as info:
            client.delete_object(Bucket=bucket, Key=key, VersionId=head["VersionId"])
        assert info.value.response["Error"]["Code"] == "AccessDenied"
        assert client.head_object(Bucket=bucket, Key=key)["VersionId"] == head["VersionId"]


def test_object_lock_on_a_bucket_without_it_holds_events_back(
    moto_server: MotoServer, s3_bucket: Callable[..., str]
) -> None:
    """A bucket that refuses the lock settings makes the sink unavailable, not dead-letter."""
    bucket = s3_bucket(object_lock=False)
    cfg = s3_config(moto_server, bucket, KEYS, object_lock_mode="GOVERNANCE", retention_days=1)
    with pytest.raises(SinkUnavailableError):
        run(deliver(cfg, [make_event(1)]))
    assert data_keys(moto_server.client(), bucket) == []


def test_same_batch_twice_writes_one_object_and_one_entry(
    moto_server: MotoServer, s3_bucket: Callable[..., str]
) -> None:
    """A retried batch (also after a restart) finds its object: no copy, no new entry."""
    bucket = s3_bucket()
    cfg = s3_config(moto_server, bucket, KEYS)
    batch = [make_event(i) for i in range(1, 6)]
    run(deliver(cfg, batch, batch))
    run(deliver(cfg, batch))  # a new process
    client = moto_server.client()
    assert len(data_keys(client, bucket)) == 1
    assert len(manifest_keys(client, bucket)) == 1
    verified(cfg)


@pytest.mark.parametrize(
    ("first", "retry", "then"),
    [
        pytest.param(range(1, 6), range(1, 11), [], id="retry-holds-more"),
        pytest.param(range(1, 11), range(1, 4), [range(4, 13)], id="retry-holds-fewer"),
        pytest.param(range(3, 8), range(1, 10), [], id="retry-starts-earlier"),
    ],
)
def test_changed_retry_batches_never_archive_an_event_twice(
    moto_server: MotoServer,
    s3_bucket: Callable[..., str],
    first: range,
    retry: range,
    then: list[range],
) -> None:
    """A retry holding more, fewer or earlier events writes only what is not archived yet."""
    bucket = s3_bucket()
    cfg = s3_config(moto_server, bucket, KEYS)
    run(deliver(cfg, [make_event(i) for i in first]))
    run(deliver(cfg, [make_event(i) for i in retry], *[[make_event(i) for i in r] for r in then]))
    seqs = Counter(line["seq"] for _, line in archived(moto_server.client(), bucket))
    expected = set(first) | set(retry) | {i for r in then for i in r}
    assert seqs == Counter(expected)  # every event exactly once
    verified(cfg)


def test_object_left_by_a_crash_before_its_manifest_is_adopted(
    moto_server: MotoServer, s3_bucket: Callable[..., str]
) -> None:
    """An object without a manifest entry (crash after the PUT) is reused and chained."""
    bucket = s3_bucket()
    cfg = s3_config(moto_server, bucket, KEYS)
    batch = [make_event(i) for i in range(1, 4)]
    orphan = encode_object("audit/", Partition("decision", "2026-11-24", "08"), batch)
    moto_server.client().put_object(Bucket=bucket, Key=orphan.key, Body=orphan.data)
    run(deliver(cfg, [*batch, make_event(4)]))
    keys = data_keys(moto_server.client(), bucket)
    assert orphan.key in keys
    assert len(keys) == 2
    verified(cfg)  # the orphan is chained: no unchained_object finding


def test_orphan_altered_before_adoption_is_refused(
    moto_server: MotoServer, s3_bucket: Callable[..., str]
) -> None:
    """An unchained object whose lines differ from the events (edited after a crash) is
    not adopted into the signed chain: the sink refuses and keeps the events waiting."""
    bucket = s3_bucket()
    cfg = s3_config(moto_server, bucket, KEYS)
    batch = [make_event(i) for i in range(1, 4)]
    forged = [make_event(i, decision="allowed") for i in range(1, 4)]  # same ids, new content
    orphan = encode_object("audit/", Partition("decision", "2026-11-24", "08"), forged)
    moto_server.client().put_object(Bucket=bucket, Key=orphan.key, Body=orphan.data)
    with pytest.raises(SinkError, match="other content"):
        run(deliver(cfg, batch))


def test_store_reset_seqs_are_not_mistaken_for_archived_events(
    moto_server: MotoServer, s3_bucket: Callable[..., str]
) -> None:
    """Same seq, different event (a new spool): it is archived, not skipped."""
    bucket = s3_bucket()
    cfg = s3_config(moto_server, bucket, KEYS)
    run(deliver(cfg, [make_event(1), make_event(2)]))
    fresh = [make_event(1, source="replica-b"), make_event(2, source="replica-b")]
    run(deliver(cfg, fresh))
    lines = [line for _, line in archived(moto_server.client(), bucket)]
    assert sorted((x["seq"], x["source"]) for x in lines) == [
        (1, "bighub"),
        (1, "replica-b"),
        (2, "bighub"),
        (2, "replica-b"),
    ]


def test_large_objects_use_multipart_upload(
    moto_server: MotoServer, s3_bucket: Callable[..., str]
) -> None:
    """Above the threshold the object goes up in parts and reads back whole."""
    bucket = s3_bucket()
    mib = 2**20
    cfg = s3_config(
        moto_server, bucket, KEYS, multipart_threshold_bytes=5 * mib, multipart_part_bytes=5 * mib
    )
    # Random bytes do not compress: 2,500 of them (as hex in the payload, and again in the
    # base64 proof) make ~5 KB per line, so 1,200 events give a ~6 MiB object.
    rng = random.Random(4)
    batch = [make_event(i, noise=rng.randbytes(2500).hex()) for i in range(1200)]
    run(deliver(cfg, batch))
    client = moto_server.client()
    [key] = data_keys(client, bucket)
    head = client.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] > 5 * mib
    assert head["ETag"].strip('"').endswith("-2")  # assembled from two parts
    assert len(list(archived(client, bucket))) == 1200
    verified(cfg)


def test_chain_head_survives_restarts(
    moto_server: MotoServer, s3_bucket: Callable[..., str]
) -> None:
    """A new process continues the chain: manifest n+1 links to manifest n."""
    bucket = s3_bucket()
    cfg = s3_config(moto_server, bucket, KEYS)
    for start in (1, 10, 20):
        run(deliver(cfg, [make_event(start), make_event(start + 1)]))
    client = moto_server.client()
    keys = manifest_keys(client, bucket)
    assert len(keys) == 3
    newest = json.loads(client.get_object(Bucket=bucket, Key=keys[0])["Body"].read())["manifest"]
    assert newest["sequence"] == 2
    assert newest["previous_manifest"]["sequence"] == 1
    assert newest["chain"]["start_index"] == 2
    verified(cfg)


def test_start_refuses_to_extend_a_forged_chain(
    moto_server: MotoServer, s3_bucket: Callable[..., str]
) -> None:
    """If the newest manifest does not verify, the sink will not write on top of it."""
    bucket = s3_bucket()
    cfg = s3_config(moto_server, bucket, KEYS)
    run(deliver(cfg, [make_event(1)]))
    client = moto_server.client()
    [key] = manifest_keys(client, bucket)
    client.put_object(Bucket=bucket, Key=key, Body=b'{"manifest": {}, "signature": "AAAA"}')
    with pytest.raises(SinkUnavailableError, match="refusing to extend"):
        run(deliver(cfg, [make_event(2)]))


def test_health_probes_the_bucket(moto_server: MotoServer, s3_bucket: Callable[..., str]) -> None:
    """Healthy on a writable bucket; not on a missing bucket or an unreachable endpoint."""
    good = S3Sink(s3_config(moto_server, s3_bucket(), KEYS))
    missing = S3Sink(s3_config(moto_server, "no-such-bucket-here", KEYS))
    down = S3Sink(s3_config(f"http://127.0.0.1:{free_port()}", "b-down", KEYS))

    async def check() -> list[tuple[bool, str]]:
        out = []
        for sink in (good, missing, down):
            health = await sink.health()
            out.append((health.ok, health.detail))
            await sink.close()
        return out

    (ok, _), (missing_ok, missing_detail), (down_ok, down_detail) = run(check())
    assert ok
    assert not missing_ok
    assert not down_ok
    assert "404" in missing_detail or "NoSuchBucket" in missing_detail
    assert "unreachable" in down_detail


def test_close_is_safe_twice(moto_server: MotoServer, s3_bucket: Callable[..., str]) -> None:
    """close() after close() does nothing and raises nothing."""

    async def twice() -> None:
        sink = S3Sink(s3_config(moto_server, s3_bucket(), KEYS))
        await sink.start()
        await sink.close()
        await sink.close()

    run(twice())


def test_a_foreign_object_at_our_key_fails_only_its_partition(
    moto_server: MotoServer, s3_bucket: Callable[..., str]
) -> None:
    """Something else under the exact key is never overwritten or taken for delivered:
    that partition fails (operator must look), the batch's other partitions are archived."""
    bucket = s3_bucket()
    cfg = s3_config(moto_server, bucket, KEYS)
    decisions = [make_event(1), make_event(3)]
    rules = [make_event(2, "rule.patch_applied")]
    target = encode_object("audit/", Partition("decision", "2026-11-24", "08"), decisions)
    moto_server.client().put_object(Bucket=bucket, Key=target.key, Body=b"planted")

    async def attempt() -> PartialDeliveryError:
        sink = S3Sink(cfg)
        await sink.start()
        try:
            with pytest.raises(PartialDeliveryError) as info:
                await sink.send([decisions[0], rules[0], decisions[1]])
        finally:
            await sink.close()
        return info.value

    error = run(attempt())
    assert sorted(error.failures) == [0, 2]
    assert all(isinstance(e, SinkUnavailableError) for e in error.failures.values())
    assert "exists with other content" in str(error.failures[0])
    body = moto_server.client().get_object(Bucket=bucket, Key=target.key)["Body"].read()
    assert body == b"planted"
    assert [line["seq"] for _, line in archived(moto_server.client(), bucket, "audit/rule/")] == [2]
