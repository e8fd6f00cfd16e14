"""``type = "s3"``: settings of the S3 compliance archive.

Validation does no network I/O: secret references are read (``env:`` / ``file:``)
and the signing key is parsed, so ``check-config`` catches a bad key before start.
"""

from __future__ import annotations

import re
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import Field, field_validator, model_validator

from sinks._extras import require
from sinks._secrets import SecretRef
from sinks.base import SinkConfig
from sinks.ocsf import OcsfOptions
from sinks.s3._fields import BucketName, EndpointUrl, SigningKey
from sinks.s3.manifest import load_private_key

__all__ = ["MIB", "S3Config"]

MIB = 1024 * 1024
# S3 refuses multipart parts under 5 MiB (all but the last).
_MIN_PART = 5 * MIB
# Characters S3 documents as safe in keys; Athena / Glue also read them unquoted.
_PREFIX = re.compile(r"[A-Za-z0-9!_.*'()/=-]*")

StorageClass = Literal[
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
]


class S3Config(SinkConfig, OcsfOptions):
    """Gzip NDJSON objects in Hive-style partitions, a signed hash chain of manifests."""

    type: Literal["s3"] = Field(default="s3", description="The S3 compliance archive.")
    # Larger batches than the SinkConfig defaults: every object costs a PUT, a LIST and a
    # chain entry, and Athena / Glue slow down on many small files.
    batch_max_events: int = Field(
        default=10_000, ge=1, le=100_000, description="Most events per batch (per send)."
    )
    batch_max_bytes: int = Field(
        default=64 * MIB, ge=1024, description="Most raw body bytes per batch (approximate)."
    )
    batch_max_wait_seconds: float = Field(
        default=300.0, ge=0, le=3600, description="Longest an event waits for its batch to fill."
    )

    bucket: BucketName = Field(
        description="Bucket name; it must exist (the sink never creates it)."
    )
    prefix: str = Field(
        default="bighub-siem",
        max_length=512,
        description='Key prefix without leading or trailing "/"; "" puts the archive at the root.',
    )
    region: str | None = Field(default=None, description="AWS region; default: the boto3 chain.")
    endpoint_url: EndpointUrl = Field(
        default=None, description="S3-compatible endpoint (MinIO, Ceph...); default: AWS."
    )
    access_key_id: SecretRef | None = Field(
        default=None, description="Access key id (reference); default: the boto3 chain."
    )
    secret_access_key: SecretRef | None = Field(
        default=None, description="Secret access key (reference), with access_key_id."
    )
    session_token: SecretRef | None = Field(
        default=None, description="Session token (reference) for temporary credentials."
    )
    server_side_encryption: Literal["none", "AES256", "aws:kms"] = Field(
        default="AES256", description='SSE on every object; "none" leaves the bucket default.'
    )
    kms_key_id: str | None = Field(
        default=None, description='KMS key id or ARN; only with server_side_encryption "aws:kms".'
    )
    storage_class: StorageClass = Field(
        default="STANDARD",
        description="Storage class of data objects; only classes readable without a restore "
        "(move to GLACIER / DEEP_ARCHIVE with a lifecycle rule). Manifests stay STANDARD.",
    )
    object_lock_mode: Literal["none", "GOVERNANCE", "COMPLIANCE"] = Field(
        default="none",
        description="Object Lock retention mode set on every object (the bucket must have "
        "Object Lock enabled).",
    )
    retention_days: int | None = Field(
        default=None, ge=1, le=36_500, description="Object Lock retention; needs object_lock_mode."
    )
    signing_key: SigningKey = Field(
        description="Ed25519 private key (reference) signing the manifests: PKCS#8 PEM, or the "
        "32-byte raw key as hex or base64."
    )
    multipart_threshold_bytes: int = Field(
        default=16 * MIB, ge=_MIN_PART, description="Objects larger than this use multipart upload."
    )
    multipart_part_bytes: int = Field(
        default=8 * MIB, ge=_MIN_PART, le=5 * 1024 * MIB, description="Size of multipart parts."
    )
    gzip_level: int = Field(default=6, ge=1, le=9, description="gzip compression level.")
    allow_unconditional_writes: bool = Field(
        default=False,
        description="Run on a store that ignores If-None-Match (conditional writes). Off: the "
        "sink refuses to start there. On: a retried object or a second writer's manifest may "
        "silently replace what is archived; verify-archive still detects a changed chain.",
    )
    connect_timeout_seconds: float = Field(default=5.0, gt=0, description="TCP connect timeout.")
    read_timeout_seconds: float = Field(default=60.0, gt=0, description="Read timeout per call.")

    @field_validator("prefix")
    @classmethod
    def _clean_prefix(cls, value: str) -> str:
        value = value.strip("/")
        if not _PREFIX.fullmatch(value) or "//" in value:
            raise ValueError("use letters, digits and ! _ . * ' ( ) / = - only, no empty segment")
        if any(seg.startswith("_") for seg in value.split("/") if seg):
            # Hive / Athena skip paths starting with "_"; the archive would be invisible.
            raise ValueError('no segment may start with "_"')
        return value

    @model_validator(mode="after")
    def _consistent(self) -> S3Config:
        # Checked here so check-config says it, not a start-up loop later.
        require("boto3", extra="s3", package="boto3", what="the s3 sink")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("set both access_key_id and secret_access_key, or neither")
        if self.session_token is not None and self.access_key_id is None:
            raise ValueError("session_token needs access_key_id and secret_access_key")
        if self.kms_key_id is not None and self.server_side_encryption != "aws:kms":
            raise ValueError('kms_key_id needs server_side_encryption = "aws:kms"')
        if (self.object_lock_mode == "none") != (self.retention_days is None):
            raise ValueError("object_lock_mode and retention_days go together")
        if self.multipart_part_bytes > self.multipart_threshold_bytes:
            raise ValueError("multipart_part_bytes must not exceed multipart_threshold_bytes")
        return self

    def private_key(self) -> Ed25519PrivateKey:
        """The parsed manifest signing key."""
        return load_private_key(self.signing_key.get_secret_value())

    def key_prefix(self) -> str:
        """The prefix as used in keys: ``""`` or ``"<prefix>/"``."""
        return f"{self.prefix}/" if self.prefix else ""
