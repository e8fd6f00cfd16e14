"""``check-config``: validate the configuration and summarise it."""

from __future__ import annotations

import argparse

from receiver.cli._common import load, with_config
from receiver.settings import Settings
from receiver.store.sqlite import sqlite_path

__all__ = ["register"]


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = load(args.config)
    names = ", ".join(f"{s.name} ({s.type})" for s in settings.sinks)
    print(
        f"config ok: ingress {settings.ingress.host}:{settings.ingress.port}"
        f"{settings.ingress.path}, store {_store_summary(settings)}, sinks: {names}"
        + _upstream_summary(settings)
    )
    return 0


def _store_summary(settings: Settings) -> str:
    url = settings.store.url
    # The spool's resolved path: relative paths are relative to the config file.
    return f"sqlite ({sqlite_path(url)})" if url.startswith("sqlite:///") else url.split(":", 1)[0]


def _upstream_summary(settings: Settings) -> str:
    up = settings.upstream
    if up is None:
        return ""
    every = f"every {up.interval_seconds:g}s" if up.interval_seconds > 0 else "on demand"
    return f", upstream replay: {len(up.webhook_ids)} webhook(s) {every}"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    with_config(sub.add_parser("check-config", help="validate the configuration")).set_defaults(
        func=cmd_check_config
    )
