"""Settings of the Splunk HEC sink (``type = "splunk_hec"``).

Validation does no network I/O. Two local checks happen here on purpose, so that
``bighub-siem check-config`` catches them: the token reference is resolved
(``env:`` / ``file:``) and ``ca_bundle`` must name a readable file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sinks._secrets import SecretRef
from sinks.base import SinkConfig
from sinks.ocsf import OcsfOptions

__all__ = [
    "CATEGORIES",
    "DEFAULT_SOURCETYPES",
    "EventMeta",
    "SplunkHecConfig",
]

Category = Literal["decision", "rule", "approval", "other"]
CATEGORIES: tuple[Category, ...] = ("decision", "rule", "approval", "other")

# One sourcetype per category, so searches and field extractions can tell them apart.
DEFAULT_SOURCETYPES: dict[str, str] = {
    "decision": "bighub:decision",
    "rule": "bighub:rule",
    "approval": "bighub:approval",
    "other": "bighub:event",
}

# Splunk: lowercase letters, digits, "_" and "-", not starting with "_" or "-".
_INDEX = r"^[a-z0-9][a-z0-9_-]{0,79}$"
# Indexed field names: a leading "_" is reserved by Splunk.
_FIELD = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"
_RESERVED_FIELDS = {"event_id", "event_type", "category"}
# Splunk's default fields (and its date_* time fields): an indexed field of the same
# name would shadow or clash with what Splunk sets itself, at search time.
SPLUNK_DEFAULT_FIELDS = frozenset(
    {
        "host",
        "index",
        "source",
        "sourcetype",
        "time",
        "timestamp",
        "punct",
        "linecount",
        "splunk_server",
        "splunk_server_group",
        "eventtype",
        "tag",
        "timestartpos",
        "timeendpos",
        "date_hour",
        "date_mday",
        "date_minute",
        "date_month",
        "date_second",
        "date_wday",
        "date_year",
        "date_zone",
    }
)
_COLLECTOR_SUFFIXES = ("/services/collector/event", "/services/collector")


class EventMeta(BaseModel):
    """HEC metadata for the events of one category; unset keys fall back to the sink's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: str | None = Field(default=None, pattern=_INDEX, description="Splunk index.")
    sourcetype: str | None = Field(
        default=None, min_length=1, max_length=256, description="Splunk sourcetype."
    )
    source: str | None = Field(
        default=None, min_length=1, max_length=256, description="Splunk source."
    )
    host: str | None = Field(default=None, min_length=1, max_length=256, description="Splunk host.")


class SplunkHecConfig(SinkConfig, OcsfOptions):
    """``type = "splunk_hec"``: Splunk's HTTP Event Collector, optionally with indexer ack."""

    type: Literal["splunk_hec"] = Field(
        default="splunk_hec", description="Splunk HTTP Event Collector."
    )
    url: str = Field(
        description="Base URL of HEC, e.g. https://splunk.example.com:8088; the sink posts to "
        "/services/collector/event under it."
    )
    token: SecretRef = Field(
        description="HEC token: env:NAME or file:/path (a literal works but is discouraged). "
        "Sent as 'Authorization: Splunk <token>', never logged."
    )
    index: str | None = Field(
        default=None, pattern=_INDEX, description="Index; unset: the token's default index."
    )
    sourcetype: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Sourcetype for every category; unset: bighub:decision, bighub:rule, "
        "bighub:approval, bighub:event by category.",
    )
    source: str = Field(
        default="bighub-siem", min_length=1, max_length=256, description="Splunk source."
    )
    host: str | None = Field(
        default=None, min_length=1, max_length=256, description="Splunk host; unset: HEC decides."
    )
    categories: dict[Category, EventMeta] = Field(
        default_factory=dict,
        description="Per-category overrides of index / sourcetype / source / host, keyed by "
        "decision, rule, approval, other.",
    )
    payload_fields: list[str] = Field(
        default_factory=lambda: ["actor", "domain"],
        description="Top-level payload keys (or keys under payload.data) sent as indexed fields "
        "when their value is a string, number or boolean; event_id, event_type and category "
        "are always sent. Splunk's default fields (host, source, sourcetype, index, time, "
        "punct, date_*, ...) are refused.",
    )
    compression: Literal["gzip", "none"] = Field(
        default="gzip", description="Request body compression."
    )
    max_request_bytes: int = Field(
        default=800_000,
        ge=16_384,
        le=100_000_000,
        description="Most uncompressed bytes per HEC request; a batch above it goes out as "
        "several requests. The default stays under the smallest max_content_length Splunk "
        "has shipped (1 MB) even without compression.",
    )
    batch_max_events: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Most events per send (one or a few HEC requests, see max_request_bytes).",
    )
    batch_max_bytes: int = Field(
        default=512 * 1024,
        ge=1024,
        description="Most raw body bytes per send (approximate).",
    )
    tls_verify: bool = Field(default=True, description="Verify the server's TLS certificate.")
    ca_bundle: Path | None = Field(
        default=None, description="PEM file of CAs to trust instead of the system store."
    )
    connect_timeout_seconds: float = Field(
        default=5.0, gt=0, le=300, description="Timeout to open a connection."
    )
    timeout_seconds: float = Field(
        default=30.0, gt=0, le=600, description="Timeout to send a request or read its answer."
    )
    ack: bool = Field(
        default=False,
        description="Use indexer acknowledgement: an event counts as delivered only once HEC "
        "confirms it was indexed (the token must have indexer acknowledgement on).",
    )
    ack_timeout_seconds: float = Field(
        # Well under the store's default 300 s lease: one send (posts + ack wait) must
        # end before another replica may take the same rows.
        default=120.0,
        gt=0,
        le=3600,
        description="An ackId not confirmed this long after its request is treated as lost "
        "and its events are sent again.",
    )
    ack_poll_interval_seconds: float = Field(
        default=1.0, gt=0, le=60, description="Longest wait between two ack status queries."
    )
    ack_state_path: Path | None = Field(
        default=None,
        description="File that keeps the ack channel and the ackIds not yet settled across "
        "restarts; unset: var/splunk_hec-<name>.ack.json (relative to the working directory).",
    )

    @field_validator("url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not carry credentials; use token")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        path = parts.path.rstrip("/")
        # Accept the endpoint users copy from Splunk's docs, and keep only the base.
        for suffix in _COLLECTOR_SUFFIXES:
            if path.endswith(suffix):
                path = path[: -len(suffix)]
                break
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))

    @field_validator("payload_fields")
    @classmethod
    def _flat_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(_FIELD, name):
                raise ValueError(f"{name!r}: field names are letters, digits, _ (not leading)")
            if name in _RESERVED_FIELDS:
                raise ValueError(f"{name!r} is always sent; do not list it")
            if name.lower() in SPLUNK_DEFAULT_FIELDS:
                raise ValueError(
                    f"{name!r} collides with a Splunk default field; the payload value stays"
                    " searchable in the event (payload.{name})"
                )
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value}: not a readable file")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SplunkHecConfig:
        if self.ca_bundle is not None and not self.tls_verify:
            raise ValueError("ca_bundle is set but tls_verify is false; choose one")
        return self

    def state_path(self) -> Path:
        """Where the ack state lives (see ``ack_state_path``)."""
        if self.ack_state_path is not None:
            return self.ack_state_path
        return Path("var") / f"splunk_hec-{self.name}.ack.json"
