"""``type = "security_lake"``: settings of the Amazon Security Lake custom-source sink.

Validation does no network I/O: the signing key and the external id reference are
read, the source names and the role ARN are checked, and an ``events`` routing that
could deliver event types with no source configured is refused here, not at 3 a.m.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sinks._secrets import SecretRef
from sinks.base import SinkConfig
from sinks.ocsf import OcsfFields, OcsfVersion, class_of
from sinks.s3._fields import BucketName, EndpointUrl, SigningKey
from sinks.s3.manifest import load_private_key

__all__ = ["INSTALL_HINT", "SecurityLakeConfig", "SourceArchive", "SourceNames"]

INSTALL_HINT = (
    "the security_lake sink needs pyarrow and boto3: pip install 'bighub-siem[securitylake]'"
)
MIB = 1024 * 1024
_SOURCE = r"^[A-Za-z0-9_-]{1,20}$"  # Security Lake: custom source names of 1-20 characters
_KNOWN_HEADS = frozenset({"decision_event", "approval", "rule"})
_GLOB = re.compile(r"[*?\[]")
_ROLE = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}")
ClassName = Literal["api_activity", "entity_management", "base_event"]


class SourceNames(BaseModel):
    """The custom source of each OCSF class (Security Lake wants one class per source)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_activity: str = Field(
        default="bighub-api-activity",
        pattern=_SOURCE,
        description="Source of decisions and approvals (API Activity, 6003).",
    )
    entity_management: str = Field(
        default="bighub-entity-mgmt",
        pattern=_SOURCE,
        description="Source of rule changes (Entity Management, 3004).",
    )
    base_event: str | None = Field(
        default=None,
        pattern=_SOURCE,
        description="Source of event types BIGHUB may add later (Base Event, 0); needed only "
        "when `events` routes more than decision_event.*, approval.* and rule.*.",
    )

    def for_class(self, class_name: str) -> str | None:
        name: str | None = getattr(self, class_name, None)
        return name


class SecurityLakeConfig(SinkConfig, OcsfFields):
    """Parquet objects of OCSF records under ``ext/<source>/`` of a Security Lake bucket."""

    type: Literal["security_lake"] = Field(
        default="security_lake", description="Amazon Security Lake custom sources."
    )
    events: list[str] = Field(
        default_factory=lambda: ["decision_event.*", "approval.*", "rule.*"],
        min_length=1,
        description="Event types routed here (glob patterns).",
    )
    ocsf_version: OcsfVersion = Field(
        default="1.1.0",
        description="OCSF version of the records; Security Lake custom sources take 1.1.0.",
    )
    # Fewer than the SinkConfig maximum: a batch is mapped and encoded in memory at once
    # (OCSF records take several times their body's size as Python objects).
    batch_max_events: int = Field(
        default=50_000, ge=1, le=100_000, description="Most events per batch (per send)."
    )
    batch_max_bytes: int = Field(
        default=64 * MIB, ge=1024, description="Most raw body bytes per batch (approximate)."
    )
    batch_max_wait_seconds: float = Field(
        default=300.0,
        ge=300.0,
        le=86_400.0,
        description="Object cadence: a class's events wait at most this long for their "
        "object (Security Lake: between 5 minutes and 1 day). A full batch goes sooner.",
    )
    bucket: BucketName = Field(description="The Security Lake bucket (aws-security-data-lake-...).")
    region: str = Field(
        pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]$",
        description="AWS region of the data lake; also the region= partition.",
    )
    account_id: str = Field(
        pattern=r"^[0-9]{12}$", description="AWS account id of the accountId= partition."
    )
    sources: SourceNames = Field(
        default_factory=SourceNames, description="Custom source name per OCSF class."
    )
    source_version: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]{1,32}$",
        description="The custom source's version, when Security Lake's location for it "
        "includes one (ext/<source>/<version>/).",
    )
    role_arn: str = Field(
        description="The provider role Security Lake created for the source "
        "(AmazonSecurityLake-Provider-<source>-<region>); writes go through it, assumed with "
        "the external id. Sources with a role of their own name it in source_roles."
    )
    source_roles: dict[ClassName, str] = Field(
        default_factory=dict,
        description="Provider role per OCSF class (api_activity, entity_management, "
        "base_event) where it is not role_arn; Security Lake creates one per source.",
    )
    external_id: SecretRef = Field(description="External id of the provider role (reference).")
    role_session_name: str = Field(
        default="bighub-siem", pattern=r"^[\w+=,.@-]{2,64}$", description="STS session name."
    )
    role_duration_seconds: int = Field(
        default=3600, ge=900, le=43_200, description="Lifetime of the assumed-role credentials."
    )
    endpoint_url: EndpointUrl = Field(default=None, description="S3 endpoint (tests); default AWS.")
    sts_endpoint_url: EndpointUrl = Field(
        default=None, description="STS endpoint (tests, VPC endpoints); default AWS."
    )
    access_key_id: SecretRef | None = Field(
        default=None, description="Credentials that may assume the role; default: boto3 chain."
    )
    secret_access_key: SecretRef | None = Field(
        default=None, description="Secret key with access_key_id."
    )
    session_token: SecretRef | None = Field(default=None, description="Session token, if any.")
    signing_key: SigningKey = Field(
        description="Ed25519 private key (reference) signing each source's manifest chain."
    )
    compression_level: int = Field(default=3, ge=1, le=22, description="zstd level.")
    multipart_threshold_bytes: int = Field(
        default=16 * MIB, ge=5 * MIB, description="Objects larger than this use multipart upload."
    )
    multipart_part_bytes: int = Field(
        default=8 * MIB, ge=5 * MIB, le=5 * 1024 * MIB, description="Size of multipart parts."
    )
    connect_timeout_seconds: float = Field(default=5.0, gt=0, description="TCP connect timeout.")
    read_timeout_seconds: float = Field(default=60.0, gt=0, description="Read timeout per call.")

    @field_validator("role_arn")
    @classmethod
    def _role(cls, value: str) -> str:
        if not _ROLE.fullmatch(value):
            raise ValueError("expected arn:aws:iam::<12-digit account>:role/<name>")
        return value

    @field_validator("source_roles")
    @classmethod
    def _roles(cls, value: dict[ClassName, str]) -> dict[ClassName, str]:
        for name, arn in value.items():
            if not _ROLE.fullmatch(arn):
                raise ValueError(f"{name}: expected arn:aws:iam::<12-digit account>:role/<name>")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SecurityLakeConfig:
        if any(importlib.util.find_spec(m) is None for m in ("pyarrow", "boto3")):
            raise ValueError(f"type: {INSTALL_HINT}")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("set both access_key_id and secret_access_key, or neither")
        if self.multipart_part_bytes > self.multipart_threshold_bytes:
            raise ValueError("multipart_part_bytes must not exceed multipart_threshold_bytes")
        if self.sources.base_event is None:
            loose = [p for p in self.events if not _routes_known_only(p)]
            if loose:
                raise ValueError(
                    f"events {loose} may route event types outside decision_event.*, "
                    "approval.* and rule.*; set sources.base_event for them"
                )
        names = [self.sources.api_activity, self.sources.entity_management]
        if self.sources.base_event:
            names.append(self.sources.base_event)
        if len(set(names)) != len(names):
            raise ValueError("sources: each OCSF class needs its own custom source")
        return self

    def source_for(self, category: str) -> str | None:
        """The custom source events of a receiver category go to."""
        return self.sources.for_class(class_of(category).name)

    def role_for(self, class_name: str) -> str:
        """The provider role writes of this class go through."""
        for name, arn in self.source_roles.items():
            if name == class_name:
                return arn
        return self.role_arn

    def source_prefix(self, source: str) -> str:
        """``ext/<source>`` or ``ext/<source>/<version>``: one archive chain each."""
        version = f"/{self.source_version}" if self.source_version else ""
        return f"ext/{source}{version}"

    def private_key(self) -> Ed25519PrivateKey:
        return load_private_key(self.signing_key.get_secret_value())


def _routes_known_only(pattern: str) -> bool:
    head = pattern.split(".", 1)[0]
    return head in _KNOWN_HEADS and not _GLOB.search(head)


@dataclass(frozen=True, slots=True)
class SourceArchive:
    """One source's archive settings (the ``ArchiveSettings`` the shared writer reads)."""

    prefix: str
    signing_key: Ed25519PrivateKey = field(repr=False)
    multipart_threshold_bytes: int = 16 * MIB
    multipart_part_bytes: int = 8 * MIB
    storage_class: str = "STANDARD"
    # The data lake bucket's own encryption applies; the provider role may hold no KMS grants.
    server_side_encryption: str = "none"
    kms_key_id: str | None = None
    object_lock_mode: str = "none"
    retention_days: int | None = None
    allow_unconditional_writes: bool = False  # S3 honours If-None-Match; never relax it here

    def key_prefix(self) -> str:
        return f"{self.prefix}/"

    def private_key(self) -> Ed25519PrivateKey:
        return self.signing_key
