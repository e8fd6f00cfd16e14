"""Configuration: one TOML file plus ``BIGHUB_SIEM_`` environment overrides.

Validation does no network I/O (sinks are only built later, at start). Secret
fields take ``env:NAME`` or ``file:/path`` references (or, discouraged, a literal)
and hold a ``SecretStr`` so a repr or a log never shows them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import (
    Field,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from receiver._sections import (
    DEFAULT_STORE_URL,
    AdminSettings,
    IngressSettings,
    LogSettings,
    ServeSettings,
    StoreSettings,
    UpstreamSettings,
)
from receiver.errors import ConfigError
from sinks import SinkConfig, sink_types
from sinks._extras import MissingExtraError
from sinks._secrets import resolve_secret  # one implementation for sinks and receiver

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

__all__ = [
    "AdminSettings",
    "IngressSettings",
    "LogSettings",
    "ServeSettings",
    "Settings",
    "StoreSettings",
    "UpstreamSettings",
    "load_settings",
    "load_store_settings",
    "resolve_secret",
]

ENV_PREFIX = "BIGHUB_SIEM_"
_SQLITE = "sqlite:///"


class _FileAndEnvironment(BaseSettings):
    """Settings read from a file (passed as init values) and the environment."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file (passed as init values).
        return (env_settings, init_settings)


class Settings(_FileAndEnvironment):
    """The root of the configuration. ``sinks`` is narrowed by ``settings_class()``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    ingress: IngressSettings = Field(description="The webhook listener.")
    store: StoreSettings = Field(default_factory=StoreSettings, description="The spool.")
    admin: AdminSettings = Field(default_factory=AdminSettings, description="Admin listener.")
    serve: ServeSettings = Field(default_factory=ServeSettings, description="The serve process.")
    log: LogSettings = Field(default_factory=LogSettings, description="Logging.")
    upstream: UpstreamSettings | None = Field(default=None, description="Upstream replay.")
    sinks: list[SinkConfig] = Field(min_length=1, description="Where events are exported.")

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        names = [s.name for s in self.sinks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sink names must be unique: {', '.join(dupes)}")
        if (
            self.admin.enabled
            and (self.admin.host, self.admin.port)
            == (
                self.ingress.host,
                self.ingress.port,
            )
            and self.admin.port != 0
        ):
            raise ValueError("admin and ingress listeners cannot share host and port")
        return self


def settings_class() -> type[Settings]:
    """``Settings`` with ``sinks`` as a discriminated union of every registered sink type."""
    models = tuple(cls.config_model for cls in sink_types().values())
    union: Any = Union[models] if len(models) > 1 else models[0]  # noqa: UP007 - built at runtime
    sink_item: Any = Annotated[union, Field(discriminator="type")] if len(models) > 1 else union
    return create_model(
        "Settings",
        __base__=Settings,
        sinks=(list[sink_item], Field(min_length=1, description="Where events are exported.")),
    )


def _format_errors(exc: ValidationError) -> ConfigError:
    lines = []
    missing: list[tuple[str, MissingExtraError]] = []
    types = sorted(sink_types())
    unknown_type = f"unknown sink type; available: {', '.join(types)}"
    for err in exc.errors(include_input=False, include_url=False):
        loc = [str(p) for p in err["loc"]]
        msg = err["msg"]
        in_sinks = loc[:1] == ["sinks"]
        if in_sinks and len(loc) >= 3 and loc[2] in types and len(types) > 1:
            del loc[2]  # the union tag pydantic inserts; the user never wrote it
        if err["type"] in {"union_tag_invalid", "union_tag_not_found"}:
            loc.append("type")
            if err["type"] == "union_tag_invalid":
                msg = unknown_type
        if in_sinks and loc[-1] == "type" and err["type"] == "literal_error":
            msg = unknown_type  # only one sink type registered: no union, a literal check
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        where = ".".join(loc) or "(root)"
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, MissingExtraError):
            missing.append((where, cause))
            msg = str(cause)
        lines.append(f"{where}: {msg}")
    return ConfigError(lines, missing=missing)


def _read(path: Path) -> dict[str, Any]:
    """The TOML file's values, relative SQLite paths anchored at the file's directory.

    A relative ``sqlite:///`` URL written in (or defaulted by) a file means "next to
    this file", so the spool does not depend on the directory ``serve`` starts in.
    A URL from the environment (``BIGHUB_SIEM_STORE__URL``) overrides this one and
    stays relative to the working directory.
    """
    try:
        with path.open("rb") as fh:
            values: dict[str, Any] = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror or exc})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML ({exc})"]) from None
    store = values.get("store", {})
    if isinstance(store, dict):
        url = store.get("url", DEFAULT_STORE_URL)
        relative = url[len(_SQLITE) :] if isinstance(url, str) and url.startswith(_SQLITE) else ""
        if relative and not relative.startswith("/"):
            base = os.path.dirname(os.path.abspath(path))
            values["store"] = {
                **store,
                "url": _SQLITE + os.path.normpath(os.path.join(base, relative)),
            }
    return values


def load_settings(path: Path | None = None, *, data: dict[str, Any] | None = None) -> Settings:
    """Read, merge with the environment, and validate.

    Args:
        path: a TOML file; ``None`` means environment only (plus ``data``).
        data: values used instead of a file (tests, embedding).

    Raises:
        ConfigError: unreadable file or invalid settings; ``problems`` names each bad key.
    """
    values = _read(path) if path is not None else dict(data or {})
    try:
        return settings_class()(**values)
    except ValidationError as exc:
        raise _format_errors(exc) from None


class _StoreOnly(_FileAndEnvironment):
    # Commands that work on the store alone read only [store]: listing dead letters
    # must not need the webhook secret or the admin token to be set.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore", frozen=True
    )

    store: StoreSettings = Field(default_factory=StoreSettings, description="The spool.")


def load_store_settings(path: Path | None = None) -> StoreSettings:
    """Only ``[store]`` (file plus environment); the other sections are not validated.

    Raises:
        ConfigError: unreadable file or invalid ``[store]``.
    """
    values = _read(path) if path is not None else {}
    try:
        return _StoreOnly(store=values.get("store", {})).store
    except ValidationError as exc:
        raise _format_errors(exc) from None
