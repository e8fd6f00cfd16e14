"""Shared helpers of the Security Lake tests: config values against moto, reading objects."""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tests.services.moto import ACCESS_KEY, REGION, SECRET_KEY, MotoServer
from tests.sinks.s3_support import KeyPair

ACCOUNT = "123456789012"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/AmazonSecurityLake-Provider-bighub-{REGION}"
EXTERNAL_ID = "bighub-ext-7f3a"
API_SOURCE = "bighub-api-activity"
ENTITY_SOURCE = "bighub-entity-mgmt"


def lake_values(moto: MotoServer, bucket: str, keys: KeyPair, **overrides: Any) -> dict[str, Any]:
    """A security_lake [[sinks]] table pointing S3 and STS at moto."""
    return {
        "name": "lake",
        "type": "security_lake",
        "bucket": bucket,
        "region": REGION,
        "account_id": ACCOUNT,
        "role_arn": ROLE_ARN,
        "external_id": EXTERNAL_ID,
        "endpoint_url": moto.endpoint,
        "sts_endpoint_url": moto.endpoint,
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
        "signing_key": keys.private_pem,
        "connect_timeout_seconds": 2.0,
        "read_timeout_seconds": 10.0,
        **overrides,
    }


def parquet_keys(client: Any, bucket: str, prefix: str = "ext/") -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return sorted(k for k in keys if k.endswith(".parquet"))


def read_object(client: Any, bucket: str, key: str) -> pa.Table:
    data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return pq.read_table(io.BytesIO(data))


def stored_ids(client: Any, bucket: str) -> list[tuple[str, str]]:
    """(key, event id) of every row in every object."""
    out: list[tuple[str, str]] = []
    for key in parquet_keys(client, bucket):
        for meta in read_object(client, bucket, key).column("metadata").to_pylist():
            out.append((key, meta["uid"]))
    return out
