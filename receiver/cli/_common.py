"""What every subcommand shares: the config lookup, the ``--config`` option, opening the store."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from receiver.cli._errors import no_config, no_spool, store_unavailable
from receiver.errors import StoreError
from receiver.settings import (
    ENV_PREFIX,
    Settings,
    StoreSettings,
    load_settings,
    load_store_settings,
)
from receiver.store import Store, create_store
from receiver.store.sqlite import sqlite_path

__all__ = ["CONFIG_ENV", "load", "load_store", "opened_store", "with_config"]

CONFIG_ENV = "BIGHUB_SIEM_CONFIG"


def _config_path(path: str | None, alternative: str = "") -> Path | None:
    """``--config``, else ``$BIGHUB_SIEM_CONFIG``, else None when the environment holds
    settings of its own (environment-only configuration).

    Raises:
        CommandError: nothing configures this process at all.
    """
    chosen = path or os.environ.get(CONFIG_ENV)
    if chosen:
        return Path(chosen)
    if not any(k.upper().startswith(ENV_PREFIX) and k.upper() != CONFIG_ENV for k in os.environ):
        raise no_config(alternative)
    return None


def load(path: str | None, *, alternative: str = "") -> Settings:
    """The whole configuration.

    Raises:
        CommandError: no configuration given.
        ConfigError: unreadable file or invalid settings.
    """
    return load_settings(_config_path(path, alternative))


def load_store(path: str | None) -> StoreSettings:
    """Only ``[store]``: commands on the store need no webhook secret or admin token.

    Raises:
        CommandError: no configuration given.
        ConfigError: unreadable file or invalid ``[store]``.
    """
    return load_store_settings(_config_path(path))


@contextlib.asynccontextmanager
async def opened_store(settings: StoreSettings, *, create: bool) -> AsyncIterator[Store]:
    """The store, open; closed on exit.

    Args:
        create: a missing SQLite spool may be created (``migrate``); commands that
            read one refuse instead, since an empty new spool would only mislead.

    Raises:
        CommandError: no spool, or the store cannot be opened (exit code 4).
    """
    if not create and settings.url.startswith("sqlite:///"):
        path = sqlite_path(settings.url)
        if not path.exists():
            raise no_spool(path)
    try:
        store = create_store(settings)
    except StoreError as exc:
        raise store_unavailable(settings, exc) from None
    try:
        await store.open()
    except (StoreError, OSError) as exc:
        with contextlib.suppress(Exception):  # release what the failed open had taken
            await store.close()
        raise store_unavailable(settings, exc) from None
    try:
        yield store
    finally:
        await store.close()


def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
    sp.add_argument("--config", help=f"TOML file (default: ${CONFIG_ENV})")
    return sp
