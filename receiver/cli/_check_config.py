"""``check-config``: validate the configuration and summarise it; ``--probe`` also
connects to each configured destination once (``_probe``)."""

from __future__ import annotations

import argparse
import asyncio

from receiver.cli._common import load, with_config
from receiver.cli._probe import probe_sinks
from receiver.settings import Settings
from receiver.store.sqlite import sqlite_path

__all__ = ["register"]


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = load(args.config)
    names = ", ".join(f"{s.name} ({s.type})" for s in settings.sinks)
    print(
        f"config ok: ingress {settings.ingress.host}:{settings.ingress.port}"
        f"{settings.ingress.path}, store {_store_summary(settings)}, sinks: {names}"
        + _upstream_summary(settings),
        flush=True,
    )
    if not args.probe:
        return 0
    results = asyncio.run(probe_sinks(settings.sinks, args.probe_timeout))
    for result in results:
        print(result.line(), flush=True)
    return 0 if all(r.ok for r in results) else 1


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
    sp = with_config(sub.add_parser("check-config", help="validate the configuration"))
    sp.add_argument(
        "--probe",
        action="store_true",
        help="also connect to each configured sink once (start, health check, close) and"
        " report; exit 1 when any fails",
    )
    sp.add_argument(
        "--probe-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="longest one sink's probe may take (default 60)",
    )
    sp.set_defaults(func=cmd_check_config)
