"""``type = "sentinel"``: settings of the Microsoft Sentinel sink (Logs Ingestion API).

Validation does no network I/O: secret references are read (``env:`` / ``file:``) and a
certificate is parsed, so ``check-config`` catches a bad one before start.
"""

from __future__ import annotations

import importlib.util
import os
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sinks._secrets import SecretRef
from sinks.base import SinkConfig

__all__ = ["CATEGORIES", "INSTALL_HINT", "Credential", "SentinelConfig", "Streams", "sdk_installed"]

CATEGORIES = ("decision", "approval", "rule", "other")
INSTALL_HINT = (
    "the sentinel sink needs azure-monitor-ingestion and azure-identity: "
    "pip install 'bighub-siem[sentinel]'"
)
# The API's own limit: 1 MB per call, compressed and uncompressed (service limits page).
MAX_CALL_BYTES = 1_048_576
Credential = Literal["client_secret", "certificate", "workload_identity", "managed_identity"]

_DCR_ID = re.compile(r"dcr-[0-9a-f]{32}")
_STREAM = re.compile(r"Custom-[A-Za-z0-9_]{1,100}")
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,253}")
_HOST = re.compile(r"(https://)?[A-Za-z0-9.-]+(:[0-9]{1,5})?/?")


class Streams(BaseModel):
    """Which DCR input stream each event category is posted to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decision: str = Field(
        default="Custom-BighubDecisions", description="Stream for decision_event.* events."
    )
    approval: str = Field(
        default="Custom-BighubDecisions", description="Stream for approval.* events."
    )
    rule: str = Field(
        default="Custom-BighubRuleChanges",
        description="Stream for rule.* events (the DCR maps it to ASimAuditEventLogs or "
        "BighubRuleChanges_CL).",
    )
    other: str = Field(
        default="Custom-BighubDecisions", description="Stream for events of any other type."
    )

    @field_validator("decision", "approval", "rule", "other")
    @classmethod
    def _custom_stream(cls, value: str) -> str:
        if not _STREAM.fullmatch(value):
            raise ValueError(
                'a Logs Ingestion input stream name: "Custom-" then letters, digits, _'
            )
        return value

    @model_validator(mode="after")
    def _rule_stream_apart(self) -> Streams:
        # Rule changes have their own row shape: a stream cannot take both shapes.
        if self.rule in (self.decision, self.approval, self.other):
            raise ValueError("rule changes need a stream of their own (their columns differ)")
        return self


class SentinelConfig(SinkConfig):
    """Rows in Log Analytics (and so Microsoft Sentinel) through a DCE and a DCR."""

    type: Literal["sentinel"] = Field(
        default="sentinel", description="Microsoft Sentinel through the Logs Ingestion API."
    )
    # Twice the SinkConfig default: the spool's per-batch work is paid half as often, and
    # 1,000 typical rows (~0.5 MB) still fit one call; bigger batches are split anyway.
    batch_max_events: int = Field(
        default=1000, ge=1, le=100_000, description="Most events per batch (per send)."
    )
    endpoint: str = Field(
        description="Logs ingestion endpoint: the data collection endpoint's "
        '"logsIngestion" URL (or the DCR\'s own), e.g. '
        '"https://bighub-abcd.westeurope-1.ingest.monitor.azure.com".'
    )
    dcr_immutable_id: str = Field(
        description='Immutable id of the data collection rule ("dcr-" and 32 hex digits; the '
        "template's output dcrImmutableId)."
    )
    streams: Streams = Field(
        default_factory=Streams, description="Input stream per event category."
    )
    credential: Credential = Field(
        default="client_secret",
        description="How to authenticate to Microsoft Entra ID: client_secret, certificate, "
        "workload_identity (AKS federated token) or managed_identity.",
    )
    tenant_id: str | None = Field(
        default=None,
        description="Directory (tenant) id; required except for managed_identity (where "
        "the identity's own tenant is used).",
    )
    client_id: str | None = Field(
        default=None,
        description="Application (client) id; for managed_identity the client id of a "
        "user-assigned identity (omit for the system-assigned one).",
    )
    client_secret: SecretRef | None = Field(
        default=None, description="Client secret (reference) for credential = client_secret."
    )
    certificate: SecretRef | None = Field(
        default=None,
        description="PEM holding the private key and the certificate (reference, e.g. "
        '"file:/run/secrets/bighub-sentinel.pem") for credential = certificate.',
    )
    certificate_password: SecretRef | None = Field(
        default=None, description="Password of an encrypted certificate key (reference)."
    )
    federated_token_file: str | None = Field(
        default=None,
        description="Path of the federated (service account) token for workload_identity; "
        "read again at least every 10 minutes and after any refusal, as the kubelet "
        "rotates it. Default: $AZURE_FEDERATED_TOKEN_FILE, which the AKS workload "
        "identity webhook sets.",
    )
    authority_host: str = Field(
        default="login.microsoftonline.com",
        description="Entra ID authority host (login.microsoftonline.us, "
        "login.chinacloudapi.cn for sovereign clouds).",
    )
    validate_authority: bool = Field(
        default=True,
        description="Validate the authority host against Microsoft's instance discovery; "
        "false only for private clouds, Azure Stack or a local emulator.",
    )
    scope: str = Field(
        default="https://monitor.azure.com//.default",
        description="Token scope of the Logs Ingestion API (sovereign clouds: "
        "https://monitor.azure.us//.default, https://monitor.azure.cn//.default).",
    )
    ca_file: str | None = Field(
        default=None,
        description="CA bundle (PEM path) to verify Entra ID and the endpoint with, e.g. "
        "behind a TLS-inspecting proxy; default: the bundle of requests (certifi).",
    )
    max_call_bytes: int = Field(
        default=1_000_000,
        ge=1024,
        le=MAX_CALL_BYTES,
        description="Largest call, uncompressed (the API takes 1 MB per call, compressed "
        "and uncompressed); a batch is split into as many calls as it needs.",
    )
    gzip_level: int = Field(default=3, ge=1, le=9, description="gzip level of call bodies.")
    connect_timeout_seconds: float = Field(default=5.0, gt=0, description="TCP connect timeout.")
    read_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Read timeout per call (and per token request)."
    )

    @field_validator("endpoint")
    @classmethod
    def _https(cls, value: str) -> str:
        value = value.rstrip("/")
        if not value.startswith("https://") or len(value) <= len("https://"):
            raise ValueError("must be an https:// URL (the bearer token is sent to it)")
        return value

    @field_validator("dcr_immutable_id")
    @classmethod
    def _dcr_id(cls, value: str) -> str:
        if not _DCR_ID.fullmatch(value):
            raise ValueError('an immutable id is "dcr-" followed by 32 hex digits')
        return value

    @field_validator("tenant_id")
    @classmethod
    def _tenant(cls, value: str | None) -> str | None:
        if value is not None and not (_GUID.fullmatch(value) or _TENANT.fullmatch(value)):
            raise ValueError("a tenant GUID or a verified domain (contoso.onmicrosoft.com)")
        return value

    @field_validator("client_id")
    @classmethod
    def _client(cls, value: str | None) -> str | None:
        if value is not None and not _GUID.fullmatch(value):
            raise ValueError("a client id is a GUID")
        return value

    @field_validator("authority_host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not _HOST.fullmatch(value) or value.startswith("http://"):
            raise ValueError("a host name (https:// optional), e.g. login.microsoftonline.com")
        return value

    @field_validator("certificate")
    @classmethod
    def _parsable_certificate(cls, value: SecretRef | None) -> SecretRef | None:
        if value is not None:
            text = value.get_secret_value()
            if "PRIVATE KEY-----" not in text or "-----BEGIN CERTIFICATE-----" not in text:
                raise ValueError("needs a PEM with both the private key and the certificate")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SentinelConfig:
        if not sdk_installed():
            raise ValueError(f"type: {INSTALL_HINT}")
        needs = {
            "client_secret": ("tenant_id", "client_id", "client_secret"),
            "certificate": ("tenant_id", "client_id", "certificate"),
            "workload_identity": ("tenant_id", "client_id", "federated_token_file"),
            "managed_identity": (),
        }[self.credential]
        if self.credential == "workload_identity" and self.federated_token_file is None:
            path = os.environ.get("AZURE_FEDERATED_TOKEN_FILE")
            if path:
                object.__setattr__(self, "federated_token_file", path)
        absent = [name for name in needs if getattr(self, name) is None]
        if absent:
            raise ValueError(f"credential = {self.credential!r} needs {', '.join(absent)}")
        extra = {
            "tenant_id": self.credential == "managed_identity",
            "client_secret": self.credential != "client_secret",
            "certificate": self.credential != "certificate",
            "certificate_password": self.credential != "certificate",
            "federated_token_file": self.credential != "workload_identity",
        }
        stray = [
            name for name, unused in extra.items() if unused and getattr(self, name) is not None
        ]
        if stray:
            raise ValueError(f"{', '.join(stray)} not used with credential = {self.credential!r}")
        return self


def sdk_installed() -> bool:
    """Whether the Azure SDK packages of the ``sentinel`` extra can be imported."""
    try:
        return all(
            importlib.util.find_spec(m) is not None
            for m in ("azure.monitor.ingestion", "azure.identity")
        )
    except ModuleNotFoundError:  # not even the "azure" namespace
        return False
