"""``type = "kafka"``: the settings, checked without touching the network.

Everything a broker would only reveal at the first send is refused here instead:
a topic template Kafka cannot name, a codec whose library is missing, and
security settings that contradict each other (a SASL protocol without a
mechanism or credentials, credentials without a SASL protocol, TLS files
without TLS). Each error names the key, so ``bighub-siem check-config`` points
at the line to fix.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from sinks._extras import install_hint, require
from sinks._secrets import SecretRef
from sinks.base import SinkConfig
from sinks.kafka.encoder import KeySpec, TopicTemplate
from sinks.ocsf import OcsfOptions

__all__ = ["CODEC_MODULES", "KafkaConfig", "codec_available"]

SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
INSTALL_HINT = install_hint("kafka")

# The module kafka-python imports for each codec (kafka/codec.py).
CODEC_MODULES: dict[str, tuple[str, ...]] = {
    "none": (),
    "gzip": (),
    "lz4": ("lz4",),
    "zstd": ("zstandard",),
}
_SERVER = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})")


def codec_available(codec: str) -> bool:
    """Whether the library kafka-python needs for ``codec`` is importable."""
    return all(importlib.util.find_spec(m) is not None for m in CODEC_MODULES[codec])


def _protocol(info: ValidationInfo) -> str:
    return str(info.data.get("security_protocol", "PLAINTEXT"))


class KafkaConfig(SinkConfig, OcsfOptions):
    """``type = "kafka"``: one record per event, keyed, with headers (see README, Kafka)."""

    type: Literal["kafka"] = Field(default="kafka", description="Apache Kafka (kafka-python).")
    bootstrap_servers: list[str] = Field(
        min_length=1, description='Brokers to bootstrap from, as "host:port".'
    )
    topic: str = Field(
        default="bighub.{category}",
        description="Topic name; may use {category}, {event_type} and {source}.",
    )
    key: str = Field(
        default="event_id",
        description=(
            "Record key: event_id, or a dotted path into the payload (actor, rule_id, ...);"
            " a missing or non-scalar value falls back to the event id."
        ),
    )
    acks: Literal["all", 1] = Field(
        default="all",
        description='"all": every in-sync replica has the record; 1: the leader only.',
    )
    enable_idempotence: bool = Field(
        default=True,
        description="Idempotent producer: broker-side retries never write a record twice.",
    )
    compression: Literal["none", "gzip", "lz4", "zstd"] = Field(
        default="none", description="Compression codec of record batches."
    )
    linger_ms: int = Field(
        default=100,
        ge=0,
        le=60_000,
        description=(
            "How long the producer may hold records while a batch is handed over, to fill"
            " requests; each send ends with a flush, so it adds no latency to a batch."
        ),
    )
    max_request_size: int = Field(
        default=1_048_576,
        ge=1024,
        le=100 * 1024 * 1024,
        description=(
            "Largest request (and record) sent; keep it at or below the broker's"
            " message.max.bytes. A record above it is dead-lettered."
        ),
    )
    request_timeout_ms: int = Field(
        default=30_000, ge=1000, le=600_000, description="How long one broker request may take."
    )
    delivery_timeout_ms: int = Field(
        default=120_000,
        ge=1000,
        le=3_600_000,
        description=(
            "How long the producer keeps retrying a record before the batch counts as failed;"
            " at least request_timeout_ms + linger_ms."
        ),
    )
    client_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]{1,128}$",
        description='Client id the broker sees (default "bighub-siem.<sink name>").',
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None,
        validate_default=True,
        description="SASL mechanism; required with SASL_PLAINTEXT / SASL_SSL.",
    )
    sasl_username: SecretRef | None = Field(
        default=None,
        validate_default=True,
        description="SASL user name (env:NAME, file:PATH or literal).",
    )
    sasl_password: SecretRef | None = Field(
        default=None,
        validate_default=True,
        description="SASL password (env:NAME or file:PATH; never logged).",
    )
    ssl_cafile: Path | None = Field(
        default=None,
        validate_default=True,
        description="PEM file of the CAs that sign the brokers' certificates (default: system CAs).",
    )
    ssl_certfile: Path | None = Field(
        default=None, validate_default=True, description="Client certificate (PEM) for mutual TLS."
    )
    ssl_keyfile: Path | None = Field(
        default=None, validate_default=True, description="Client private key (PEM) for mutual TLS."
    )
    ssl_key_password: SecretRef | None = Field(
        default=None,
        validate_default=True,
        description="Password of the client private key (env:NAME or file:PATH).",
    )
    ssl_check_hostname: bool = Field(
        default=True, description="Check that the broker certificate names the host dialled."
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, value: list[str]) -> list[str]:
        for server in value:
            match = _SERVER.fullmatch(server)
            if match is None or not 0 < int(match.group(2)) < 65536:
                raise ValueError(f'{server!r}: expected "host:port"')
        return value

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        TopicTemplate.parse(value)
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        KeySpec.parse(value)
        return value

    @field_validator("compression")
    @classmethod
    def _codec(cls, value: str) -> str:
        if not codec_available(value):
            module = " / ".join(CODEC_MODULES[value])
            raise ValueError(
                f"{value}: the Python package {module} is not installed (pip install {module})"
            )
        return value

    @field_validator("sasl_mechanism")
    @classmethod
    def _mechanism(cls, value: str | None, info: ValidationInfo) -> str | None:
        protocol = _protocol(info)
        if protocol in SASL_PROTOCOLS and value is None:
            raise ValueError(f"required when security_protocol is {protocol}")
        if protocol not in SASL_PROTOCOLS and value is not None:
            raise ValueError(
                f"set, but security_protocol is {protocol}: use SASL_PLAINTEXT or SASL_SSL"
            )
        return value

    @field_validator("sasl_username", "sasl_password")
    @classmethod
    def _credential(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        protocol = _protocol(info)
        if protocol in SASL_PROTOCOLS and (value is None or not value.get_secret_value()):
            raise ValueError(f"required when security_protocol is {protocol}")
        if protocol not in SASL_PROTOCOLS and value is not None:
            raise ValueError(
                f"set, but security_protocol is {protocol}: use SASL_PLAINTEXT or SASL_SSL"
            )
        return value

    @field_validator("ssl_cafile", "ssl_certfile", "ssl_keyfile")
    @classmethod
    def _tls_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return value
        protocol = _protocol(info)
        if protocol not in TLS_PROTOCOLS:
            raise ValueError(f"set, but security_protocol is {protocol}: use SSL or SASL_SSL")
        if not value.is_file():
            raise ValueError(f"{value}: no such file")
        return value

    @field_validator("ssl_key_password")
    @classmethod
    def _key_password(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None and info.data.get("ssl_certfile") is None:
            raise ValueError("set, but ssl_certfile is not")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> KafkaConfig:
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("ssl_keyfile: set, but ssl_certfile is not")
        if "ssl_check_hostname" in self.model_fields_set and (
            self.security_protocol not in TLS_PROTOCOLS
        ):
            raise ValueError(
                f"ssl_check_hostname: set, but security_protocol is {self.security_protocol}"
            )
        if self.enable_idempotence and self.acks != "all":
            raise ValueError('acks: the idempotent producer needs acks = "all"')
        if self.delivery_timeout_ms < self.request_timeout_ms + self.linger_ms:
            raise ValueError("delivery_timeout_ms: must be at least request_timeout_ms + linger_ms")
        require("kafka", extra="kafka", package="kafka-python", what="the kafka sink")
        return self

    @property
    def topic_template(self) -> TopicTemplate:
        return TopicTemplate.parse(self.topic)

    @property
    def key_spec(self) -> KeySpec:
        return KeySpec.parse(self.key)
