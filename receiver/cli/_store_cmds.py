"""``migrate`` and ``dead-letters``: commands that work on the store directly.

They read only ``[store]`` of the configuration, so they run without the webhook
secret or the admin token in the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from receiver.cli._common import load_store, opened_store, with_config
from receiver.settings import StoreSettings

__all__ = ["register"]


async def _migrate(settings: StoreSettings) -> int:
    async with opened_store(settings, create=True) as store:  # opening applies migrations
        kind = settings.url.split(":", 1)[0]
        done = store.migrated
        if done is None or done.before == done.after:
            print(f"{kind} schema is up to date (version {done.after if done else '?'})")
        else:
            print(f"{kind} schema migrated from version {done.before} to {done.after}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    return asyncio.run(_migrate(load_store(args.config)))


async def _dead_letters(settings: StoreSettings, args: argparse.Namespace) -> int:
    if args.action != "list" and not args.all and not args.id:
        print("bighub-siem: give --id N (repeatable) or --all", file=sys.stderr)
        return 2
    async with opened_store(settings, create=False) as store:
        if args.action == "list":
            rows = await store.dead_letters(sink=args.sink, limit=args.limit)
            if not rows:
                print("no dead letters")
            for r in rows:
                when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.dead_at))
                print(
                    f"{r.outbox_id:>8}  {r.sink:<16} {r.event_type:<28} {r.event_id:<40} "
                    f"attempts={r.attempts} dead_at={when}  {r.error}"
                )
            return 0
        ids = None if args.all else args.id
        if args.action == "retry":
            n = await store.requeue_dead(sink=args.sink, ids=ids, now=time.time())
            print(f"requeued {n} dead letter(s)")
        else:
            n = await store.purge_dead(sink=args.sink, ids=ids)
            print(f"purged {n} dead letter(s)")
    return 0


def cmd_dead_letters(args: argparse.Namespace) -> int:
    return asyncio.run(_dead_letters(load_store(args.config), args))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    with_config(
        sub.add_parser("migrate", help="create or upgrade the store's schema, then exit")
    ).set_defaults(func=cmd_migrate)
    dl = with_config(sub.add_parser("dead-letters", help="list, retry or purge dead letters"))
    dl.add_argument("action", choices=["list", "retry", "purge"])
    dl.add_argument("--sink")
    dl.add_argument("--id", type=int, action="append")
    dl.add_argument("--all", action="store_true")
    dl.add_argument("--limit", type=int, default=100)
    dl.set_defaults(func=cmd_dead_letters)
