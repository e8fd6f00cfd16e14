"""``migrate``, ``dead-letters`` and ``retire-sink``: commands that work on the store.

``migrate`` and ``dead-letters`` read only ``[store]`` of the configuration, so they run
without the webhook secret or the admin token in the environment; ``retire-sink`` reads
the whole file, to refuse a sink that is still configured.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from receiver.cli._common import load, load_store, opened_store, with_config
from receiver.settings import Settings, StoreSettings

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
            rows = await store.dead_letters(sink=args.sink, limit=args.limit, state=args.state)
            if not rows:
                print("no dead letters")
            for r in rows:
                when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.dead_at))
                print(
                    f"{r.id:>8}  {r.sink:<16} {r.event_type:<28} {r.event_id:<40} "
                    f"attempts={r.attempts} dead_at={when} state={r.state}  {r.error}"
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


async def _retire_sink(settings: Settings, sink: str) -> int:
    if sink in {s.name for s in settings.sinks}:
        print(
            f"bighub-siem: sink {sink!r} is still in the configuration; remove it first"
            " (every replica), then retire it",
            file=sys.stderr,
        )
        return 2
    async with opened_store(settings.store, create=False) as store:
        if sink not in await store.cursor_sinks():
            print(f"bighub-siem: the store has no cursor for sink {sink!r}", file=sys.stderr)
            return 1
        moved = await store.retire_sink(sink, f"sink {sink!r} was retired", now=time.time())
        print(f"retired sink {sink!r}: {moved} event(s) it had yet to deliver are dead letters")
        return 0


def cmd_retire_sink(args: argparse.Namespace) -> int:
    return asyncio.run(_retire_sink(load(args.config), args.sink))


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
    dl.add_argument(
        "--state",
        choices=["dead", "requeued", "all"],
        default="dead",
        help="list: dead (default), requeued (waiting to go out again) or all",
    )
    dl.set_defaults(func=cmd_dead_letters)
    rs = with_config(
        sub.add_parser(
            "retire-sink",
            help="a sink removed from the config: dead-letter what it still had, drop its cursor",
        )
    )
    rs.add_argument("sink", help="the removed sink's name")
    rs.set_defaults(func=cmd_retire_sink)
