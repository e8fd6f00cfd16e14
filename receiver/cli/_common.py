"""What every subcommand shares: the config file lookup and the ``--config`` option."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from receiver.settings import Settings, load_settings

__all__ = ["CONFIG_ENV", "load", "with_config"]

CONFIG_ENV = "BIGHUB_SIEM_CONFIG"


def load(path: str | None) -> Settings:
    """The settings from ``--config``, else ``$BIGHUB_SIEM_CONFIG``, else the environment.

    Raises:
        ConfigError: unreadable file or invalid settings.
    """
    chosen = path or os.environ.get(CONFIG_ENV)
    return load_settings(Path(chosen) if chosen else None)


def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
    sp.add_argument("--config", help=f"TOML file (default: ${CONFIG_ENV})")
    return sp
