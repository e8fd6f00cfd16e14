"""The sections of the configuration (``[ingress]``, ``[store]``, ``[serve]``,
``[admin]``, ``[log]``, ``[upstream]``) and the secret types they use.

``receiver.settings`` assembles them into the root model and reads the file and the
environment; import them from there.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from sinks._extras import require
from sinks._secrets import resolve_secret

__all__ = [
    "DEFAULT_STORE_URL",
    "AdminSettings",
    "IngressSettings",
    "LogSettings",
    "Secret",
    "ServeSettings",
    "StoreSettings",
    "StrongSecret",
    "UpstreamSettings",
]

MIN_SECRET_BYTES = 16
# Ids BIGHUB gives webhooks and deliveries end up in API paths: no "/", "?", "#" or "..".
_UPSTREAM_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
DEFAULT_STORE_URL = "sqlite:///var/spool.db"


def _long_enough(value: SecretStr) -> SecretStr:
    if len(value.get_secret_value().encode("utf-8")) < MIN_SECRET_BYTES:
        raise ValueError(f"secret is shorter than {MIN_SECRET_BYTES} bytes")
    return value


# A literal that is surely a reference written without its prefix: an environment
# variable name (upper-case words joined by "_", e.g. BIGHUB_WEBHOOK_SECRET), or a path
# (/run/secrets/bighub, ./secret.txt, ~/bighub.key). Random secrets do not look like
# either: a base64 secret may start with "/" but then has upper case, "+" or "=".
_ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
_PATH = re.compile(r"(?:~|\.{1,2})?/(?:[a-z0-9_.@-]+/)*[a-z0-9_.@-]+|(?:~|\.{1,2})/\S+")


def _not_a_reference(value: object) -> object:
    """Refuse a literal secret that is a reference missing its ``env:`` / ``file:``."""
    if not isinstance(value, str) or value.startswith(("env:", "file:")):
        return value
    if _ENV_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} looks like the name of an environment variable, not a secret;"
            f' to read the secret from it write "env:{value}"'
        )
    if _PATH.fullmatch(value) or (value.startswith("/") and Path(value).is_file()):
        raise ValueError(
            "this looks like a file path, not a secret; to read the secret from the file"
            f' write "file:{os.path.expanduser(value)}"'
        )
    return value


Secret = Annotated[SecretStr, BeforeValidator(resolve_secret)]
StrongSecret = Annotated[
    SecretStr,
    BeforeValidator(resolve_secret),
    BeforeValidator(_not_a_reference),
    AfterValidator(_long_enough),
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IngressSettings(_Section):
    host: str = Field(default="127.0.0.1", description="Address the webhook listener binds.")
    port: int = Field(default=8080, ge=0, le=65535, description="Port of the webhook listener.")
    path: str = Field(default="/webhooks/bighub", description="Path BIGHUB posts to.")
    source: str = Field(
        default="bighub",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Name recorded with each event; dedup is per (source, event id).",
    )
    secrets: list[StrongSecret] = Field(
        min_length=1,
        description="Webhook signing secrets; several while rotating. References allowed.",
    )
    tolerance_seconds: int = Field(
        default=300, ge=1, le=86400, description="Largest accepted clock skew, past or future."
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="Largest accepted body."
    )
    signature_header: str = Field(default="X-BIGHUB-Signature", description="Signature header.")
    timestamp_header: str = Field(default="X-BIGHUB-Timestamp", description="Timestamp header.")
    event_id_header: str = Field(default="X-BIGHUB-Event-Id", description="Event id header.")
    event_type_header: str = Field(default="X-BIGHUB-Event", description="Event type header.")
    delivery_id_header: str = Field(
        default="X-BIGHUB-Delivery-Id", description="Delivery id header."
    )
    # Edge limits (docs/ingress.md): what a client without credentials can make us hold.
    max_header_bytes: int = Field(
        default=16 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Largest request line plus headers; larger answers 431 and closes.",
    )
    max_header_count: int = Field(
        default=100, ge=8, le=1000, description="Most header fields; more answers 431 and closes."
    )
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="From a new connection, or the first byte of a request, until its headers"
        " are complete; slower answers 408 (or closes a connection that sent nothing).",
    )
    body_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="From the end of the headers until the whole body arrived; slower answers"
        " 408 and closes.",
    )
    keepalive_timeout_seconds: float = Field(
        default=65.0,
        gt=0,
        le=3600,
        description="An idle keep-alive connection is closed after this long. Keep it above a"
        " load balancer's idle timeout (AWS ALB: 60 s) so the balancer closes first.",
    )
    max_connections: int = Field(
        default=256,
        ge=4,
        le=100_000,
        description="Open connections at most. Past it, the longest-idle connection (no request"
        " in progress) is closed to make room; when none is idle, the new one gets 503.",
    )

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/") or value in {"/healthz", "/readyz"}:
            raise ValueError("must start with '/' and not be /healthz or /readyz")
        return value


class StoreSettings(_Section):
    url: str = Field(
        default=DEFAULT_STORE_URL,
        description=(
            "sqlite:///relative/path (relative to the config file's directory),"
            " sqlite:////absolute/path, or postgresql://..."
        ),
    )
    dedup_window_seconds: int = Field(
        default=7 * 86400, ge=60, description="How long event ids are remembered for dedup."
    )
    max_spool_bytes: int = Field(
        default=1024**3,
        ge=1024,
        description="Undelivered body bytes held before ingress answers 503.",
    )
    max_spool_events: int = Field(
        default=1_000_000, ge=1, description="Undelivered events held before ingress answers 503."
    )
    retry_after_seconds: int = Field(
        default=30, ge=1, le=3600, description="Retry-After sent with a 503."
    )
    prune_interval_seconds: float = Field(
        default=300, gt=0, description="How often expired dedup ids are pruned."
    )
    lease_seconds: float = Field(
        default=30,
        ge=1,
        le=3600,
        description=(
            "How long a dispatcher's hold on a sink's cursor lasts without renewal; it is"
            " renewed every third of this while the dispatcher works, so a send may take"
            " longer. With several dispatch replicas, a crashed replica's sinks go to"
            " another once its lease runs out."
        ),
    )
    max_queue_events: int = Field(
        default=10_000,
        ge=1,
        description="Ingest requests waiting for (or inside) a commit at most; more get 503.",
    )
    max_queue_bytes: int = Field(
        default=32 * 1024**2,
        ge=1024**2,
        description="Body bytes waiting for (or inside) a commit at most; more get 503.",
    )
    ingest_deadline_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="A request not committed within this time is answered 503 at once.",
    )
    max_dead_letter_bytes: int = Field(
        default=1024**3,
        ge=1024,
        description=(
            "Body bytes dead letters may hold (apart from the spool quota). When a new dead"
            " letter would not fit, its sink holds (reported down) until dead letters are"
            " retried or purged; nothing is dropped."
        ),
    )
    min_free_bytes: int = Field(
        default=64 * 1024**2,
        ge=0,
        description="SQLite: /readyz says not ready when the spool's disk has less free space.",
    )
    password: Secret | None = Field(
        default=None,
        description="PostgreSQL password (env:/file: reference); overrides one in the URL.",
    )
    pool_max_size: int = Field(
        default=10, ge=2, le=200, description="PostgreSQL connections per process at most."
    )

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:///, postgresql:// or postgres://")
        if not value.startswith("sqlite:///"):
            what = "the PostgreSQL store"
            require("psycopg", extra="postgres", package="psycopg", what=what)
            require("psycopg_pool", extra="postgres", package="psycopg-pool", what=what)
        return value


class ServeSettings(_Section):
    export_share_while_ingesting: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description=(
            "While webhooks arrive, the most of the time the dispatchers of a process"
            " spend exporting (1: no limit). Ingest comes first: a backlog drains more"
            " slowly meanwhile, and at full speed once webhooks pause."
        ),
    )
    shutdown_grace_seconds: float = Field(
        default=20.0,
        gt=0,
        le=600,
        description=(
            "After SIGTERM: time for in-flight webhooks and sends to finish. Sends still"
            " running then are abandoned without recording anything (sent again after the"
            " restart) and the process exits 0. Keep it below the orchestrator's kill timeout."
        ),
    )


class AdminSettings(_Section):
    enabled: bool = Field(default=True, description="Run the admin / metrics listener.")
    host: str = Field(default="127.0.0.1", description="Address the admin listener binds.")
    port: int = Field(default=9464, ge=0, le=65535, description="Port of the admin listener.")
    token: StrongSecret | None = Field(
        default=None,
        description="Bearer token for /admin/*; without it /admin/* answers 401 to everyone.",
    )
    max_connections: int = Field(
        default=64,
        ge=4,
        le=10_000,
        description="Open connections at most; header, body and keep-alive limits are"
        " those of [ingress].",
    )


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Lowest level logged."
    )
    format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: console on a TTY, JSON otherwise."
    )


class UpstreamSettings(_Section):
    """``[upstream]``: ask the BIGHUB API to replay deliveries this receiver missed."""

    base_url: str = Field(
        default="https://api.bighub.io",
        description="BIGHUB API base URL (https; the client allows http only for localhost).",
    )
    api_key: Secret | None = Field(default=None, description="BIGHUB API key (reference).")
    bearer_token: Secret | None = Field(default=None, description="Or a bearer token.")
    webhook_ids: list[Annotated[str, Field(pattern=_UPSTREAM_ID)]] = Field(
        min_length=1, description="Webhooks (pointing at this receiver) to reconcile."
    )
    interval_seconds: float = Field(
        default=300, ge=0, description="Seconds between runs inside serve; 0 = only on demand."
    )
    lookback_limit: int = Field(default=200, ge=1, le=10_000, description="Deliveries read.")
    max_replays_per_run: int = Field(default=100, ge=0, description="Replays asked per run.")
    replay_rate_per_second: float = Field(default=2.0, gt=0, description="Replay request rate.")
    cooldown_seconds: float = Field(
        default=3600, ge=0, description="A delivery is not asked for again within this time."
    )
    timeout_seconds: float = Field(
        default=10.0, gt=0, le=120, description="Timeout of one BIGHUB API request."
    )
    max_retries: int = Field(
        default=2, ge=0, le=5, description="Retries the bighub client makes itself (429, 5xx)."
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", value):
            raise ValueError("must be an http(s) URL without query or fragment")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_credential(self) -> UpstreamSettings:
        if self.api_key is None and self.bearer_token is None:
            raise ValueError("set api_key or bearer_token")
        return self
