"""``replay``: ask the BIGHUB API to replay deliveries this receiver missed."""

from __future__ import annotations

import argparse
import asyncio
import sys

from receiver.cli._common import load, opened_store, with_config
from receiver.settings import Settings

__all__ = ["register"]


async def _replay(settings: Settings, args: argparse.Namespace) -> int:
    from receiver.reconcile import Reconciler, render_table

    if settings.upstream is None:
        print("bighub-siem: replay needs an [upstream] section in the config", file=sys.stderr)
        return 2
    # An existing spool only: a new, empty one would hold nothing and ask for every failure.
    async with opened_store(settings.store, create=False) as store:
        reconciler = Reconciler(settings.upstream, store, source=settings.ingress.source)
        try:
            report = await reconciler.run(dry_run=args.dry_run, webhook_ids=args.webhook_id)
        except ValueError as exc:
            print(f"bighub-siem: --webhook-id: {exc}", file=sys.stderr)
            return 2
    print(render_table(report))
    return 0 if report.ok else 1


def cmd_replay(args: argparse.Namespace) -> int:
    from receiver.log import configure_logging

    settings = load(args.config)
    configure_logging(settings.log)  # logs to stderr; stdout carries the table
    return asyncio.run(_replay(settings, args))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rp = with_config(sub.add_parser("replay", help="ask BIGHUB to replay missed deliveries"))
    rp.add_argument("--dry-run", action="store_true", help="only list what would be asked")
    rp.add_argument("--webhook-id", action="append", help="this webhook only (repeatable)")
    rp.set_defaults(func=cmd_replay)
