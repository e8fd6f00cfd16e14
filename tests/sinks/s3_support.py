"""Shared helpers of the S3 sink tests: keys, events, configs, reading the bucket back."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from receiver.envelope import category_of
from receiver.store import NewEvent
from sinks import Event, Sink
from sinks.s3 import S3Config
from tests.harness import event_body, signed_headers
from tests.services.moto import ACCESS_KEY, REGION, SECRET_KEY, MotoServer


@dataclass(frozen=True)
class KeyPair:
    private_pem: str
    public_pem: bytes

    @property
    def private(self) -> Ed25519PrivateKey:
        key = serialization.load_pem_private_key(self.private_pem.encode(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        return key


def keypair() -> KeyPair:
    key = Ed25519PrivateKey.generate()
    return KeyPair(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


def s3_table(
    moto: MotoServer | str, bucket: str, keys: KeyPair, **overrides: Any
) -> dict[str, Any]:
    """An ``[[sinks]]`` table for an S3 sink on ``moto`` (a server or an endpoint URL)."""
    endpoint = moto if isinstance(moto, str) else moto.endpoint
    return {
        "name": "archive",
        "type": "s3",
        "bucket": bucket,
        "prefix": "audit",
        "region": REGION,
        "endpoint_url": endpoint,
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
        "signing_key": keys.private_pem,
        "connect_timeout_seconds": 2.0,
        "read_timeout_seconds": 10.0,
        **overrides,
    }


def s3_config(moto: MotoServer | str, bucket: str, keys: KeyPair, **overrides: Any) -> S3Config:
    return S3Config(**s3_table(moto, bucket, keys, **overrides))


def make_event(
    seq: int,
    event_type: str = "decision_event.created",
    occurred_at: str | None = "2026-11-24T08:15:00.000+00:00",
    *,
    received_at: float | None = None,
    source: str = "bighub",
    **extra: Any,
) -> Event:
    """A stored event as the dispatcher would hand it over, with a real signature."""
    body = event_body(f"evt_{seq:06d}", event_type, **extra)
    headers = signed_headers(body, ts=1_763_971_200)
    return Event(
        seq=seq,
        event_id=f"evt_{seq:06d}",
        id_origin="body.event_id",
        event_type=event_type,
        category=category_of(event_type),
        occurred_at=occurred_at,
        received_at=received_at if received_at is not None else time.time(),
        source=source,
        delivery_id=f"dlv_{seq}",
        body=body,
        signature=headers["X-BIGHUB-Signature"],
        timestamp=headers["X-BIGHUB-Timestamp"],
    )


def new_event(
    n: int,
    event_type: str = "decision_event.created",
    *,
    created_at: str = "2026-11-24T08:00:00Z",
    sinks: tuple[str, ...] = ("archive",),
    pad: int = 0,
) -> NewEvent:
    """An event as ingress would hand it to ``Store.ingest``."""
    body = event_body(f"evt_{n:06d}", event_type, created_at=created_at, pad="x" * pad)
    headers = signed_headers(body)
    return NewEvent(
        source="bighub",
        event_id=f"evt_{n:06d}",
        id_origin="body.event_id",
        event_type=event_type,
        category=category_of(event_type),
        occurred_at=created_at.replace("Z", ".000+00:00"),
        received_at=time.time(),
        delivery_id=None,
        body=body,
        signature=headers["X-BIGHUB-Signature"],
        timestamp=headers["X-BIGHUB-Timestamp"],
        sinks=sinks,
    )


async def run_sink(sink: Sink, *batches: Sequence[Event]) -> None:
    """Start a sink, send each batch, close it (one process lifetime)."""
    await sink.start()
    try:
        for batch in batches:
            await sink.send(batch)
    finally:
        await sink.close()


def data_keys(client: Any, bucket: str, prefix: str = "audit/") -> list[str]:
    """Archive objects (not manifests, not the marker), sorted."""
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return sorted(k for k in keys if k.endswith(".ndjson.gz"))


def manifest_keys(client: Any, bucket: str, prefix: str = "audit/") -> list[str]:
    page = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}_manifests/")
    return [o["Key"] for o in page.get("Contents", [])]


def read_lines(client: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return [json.loads(line) for line in gzip.decompress(data).splitlines()]


def archived(
    client: Any, bucket: str, prefix: str = "audit/"
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, line) for every archived line."""
    for key in data_keys(client, bucket, prefix):
        for line in read_lines(client, bucket, key):
            yield key, line
