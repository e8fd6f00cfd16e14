"""``bighub-siem`` (and ``python -m receiver``): serve, check-config, send-test, replay,
dead-letters, migrate, verify-archive.

Exit codes: 0 success, 1 the command ran and found a failure, 2 bad usage or config.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import uvicorn
from pydantic import SecretStr

from receiver import signatures
from receiver.errors import ConfigError, StoreError
from receiver.log import flush_logs
from receiver.settings import Settings, load_settings, resolve_secret

if TYPE_CHECKING:
    from receiver.service import Role, Service

__all__ = ["main"]

CONFIG_ENV = "BIGHUB_SIEM_CONFIG"


def _settings(path: str | None) -> Settings:
    chosen = path or os.environ.get(CONFIG_ENV)
    return load_settings(Path(chosen) if chosen else None)


# -- serve --------------------------------------------------------------------------


class _Server(uvicorn.Server):
    # Two servers share one process; serve() installs the signal handlers once for both.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve(settings: Settings, role: Role = "all") -> int:
    from receiver.admin import create_admin_app
    from receiver.app import create_app
    from receiver.service import Service

    try:
        service = Service(settings, role=role)
        await service.start()
    except StoreError as exc:
        print(f"bighub-siem: cannot open the store: {exc}", file=sys.stderr)
        return 1
    servers: list[_Server] = []
    if role != "dispatch":  # a dispatch replica takes no webhooks
        app = create_app(service, manage_service=False)
        servers.append(_server(app, settings.ingress.host, settings.ingress.port))
    if settings.admin.enabled:
        servers.append(_server(create_admin_app(service), settings.admin.host, settings.admin.port))
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def stop() -> None:
        stopping.set()
        for s in servers:
            s.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    flusher = asyncio.create_task(_flush_logs_periodically())
    listening = asyncio.create_task(
        _mark_listening(servers[0], service) if servers else asyncio.sleep(0)
    )
    try:
        if servers:
            await asyncio.gather(*(s.serve() for s in servers))
        else:  # dispatch role without the admin listener: run until signalled
            await stopping.wait()
    finally:
        # Listeners are closed first, so nothing new arrives while sinks drain.
        stop()
        listening.cancel()
        await service.stop()
        flusher.cancel()
        flush_logs()
    return 0


def _server(app: Any, host: str, port: int) -> _Server:
    return _Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=10,
        )
    )


async def _flush_logs_periodically(interval: float = 0.25) -> None:
    while True:
        await asyncio.sleep(interval)
        flush_logs()


async def _mark_listening(server: uvicorn.Server, service: Service) -> None:
    # uvicorn has no "listening" callback or event; its flag turns true once sockets are bound.
    while not server.started and not server.should_exit:  # noqa: ASYNC110 - only a flag exists
        await asyncio.sleep(0.05)
    if server.started:
        service.mark_listening()


def cmd_serve(args: argparse.Namespace) -> int:
    from receiver.log import configure_logging

    settings = _settings(args.config)
    configure_logging(settings.log)
    # The event loop thread does many short syscalls and must win the GIL back quickly
    # from the SQLite writer thread; the default 5 ms switch interval convoys responses.
    sys.setswitchinterval(0.0005)
    # Objects made at start-up (settings, app, routes) never die: keep them out of every
    # collection, and collect the young generation less often; per-request garbage is
    # small and short-lived, and full collections were the p99 outliers.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    return _run_loop(_serve(settings, args.role))


def _run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop when installed (uvicorn[standard] brings it), else asyncio."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is absent on some platforms
        return asyncio.run(main)
    return uvloop.run(main)


# -- migrate ---------------------------------------------------------------------------


async def _migrate(settings: Settings) -> int:
    from receiver.store import create_store

    try:
        store = create_store(settings.store)
        await store.open()  # opening applies the missing migrations
    except StoreError as exc:
        print(f"bighub-siem: migrate failed: {exc}", file=sys.stderr)
        return 1
    try:
        kind = settings.store.url.split(":", 1)[0]
        done = store.migrated
        if done is None or done.before == done.after:
            print(f"{kind} schema is up to date (version {done.after if done else '?'})")
        else:
            print(f"{kind} schema migrated from version {done.before} to {done.after}")
        return 0
    finally:
        await store.close()


def cmd_migrate(args: argparse.Namespace) -> int:
    return asyncio.run(_migrate(_settings(args.config)))


# -- check-config ---------------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    names = ", ".join(f"{s.name} ({s.type})" for s in settings.sinks)
    print(
        f"config ok: ingress {settings.ingress.host}:{settings.ingress.port}"
        f"{settings.ingress.path}, store {settings.store.url.split(':', 1)[0]}, sinks: {names}"
        + _upstream_summary(settings)
    )
    return 0


def _upstream_summary(settings: Settings) -> str:
    up = settings.upstream
    if up is None:
        return ""
    every = f"every {up.interval_seconds:g}s" if up.interval_seconds > 0 else "on demand"
    return f", upstream replay: {len(up.webhook_ids)} webhook(s) {every}"


# -- send-test --------------------------------------------------------------------------


def sample_events(kind: str, count: int) -> list[dict[str, Any]]:
    """Sample BIGHUB-like events for ``send-test`` (fresh ids each call)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    makers: dict[str, Callable[[], dict[str, Any]]] = {
        "decision": lambda: {
            "event_type": "decision_event.created",
            "decision": "blocked",
            "risk_score": 0.91,
            "actor": "agent:refund-bot",
            "domain": "payments",
            "action": {"tool": "refund_payment", "amount": 1250, "currency": "EUR"},
            "rule_id": "rule_refund_limit",
        },
        "rule": lambda: {
            "event_type": "rule.patch_applied",
            "rule_id": "rule_refund_limit",
            "actor": "user:secops@example.com",
            "patch": {"max_amount": 1000},
        },
        "approval": lambda: {
            "event_type": "approval.created",
            "approval_id": f"apr_{uuid.uuid4().hex[:10]}",
            "actor": "agent:pricing-bot",
            "domain": "pricing",
            "reason": "price change above 20%",
        },
    }
    kinds = list(makers) if kind == "all" else [kind]
    out = []
    for i in range(count):
        event = makers[kinds[i % len(kinds)]]()
        out.append({"event_id": f"evt_{uuid.uuid4().hex}", "created_at": now, **event})
    return out


def cmd_send_test(args: argparse.Namespace) -> int:
    if args.secret:
        try:
            secret = resolve_secret(args.secret)
        except ValueError as exc:
            print(f"bighub-siem: --secret: {exc}", file=sys.stderr)
            return 2
        key = secret.get_secret_value() if isinstance(secret, SecretStr) else str(secret)
    else:
        key = _settings(args.config).ingress.secrets[0].get_secret_value()
    failures = 0
    with httpx.Client(timeout=args.timeout) as client:
        for event in sample_events(args.type, args.count):
            body = json.dumps(event, separators=(",", ":")).encode()
            ts = int(time.time())
            headers = {
                "Content-Type": "application/json",
                "X-BIGHUB-Timestamp": str(ts),
                "X-BIGHUB-Signature": signatures.signature_header(key, ts, body),
                "X-BIGHUB-Delivery-Id": f"dlv_{uuid.uuid4().hex[:12]}",
            }
            try:
                resp = client.post(args.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                print(f"{event['event_type']:<24} {event['event_id']}  error: {exc}")
                failures += 1
                continue
            ok = 200 <= resp.status_code < 300
            failures += not ok
            print(f"{event['event_type']:<24} {event['event_id']}  {resp.status_code} {resp.text}")
    return 1 if failures else 0


# -- dead-letters ------------------------------------------------------------------------


async def _dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    from receiver.store import create_store

    store = create_store(settings.store)
    await store.open()
    try:
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
        if not args.all and not args.id:
            print("bighub-siem: give --id N (repeatable) or --all", file=sys.stderr)
            return 2
        ids = None if args.all else args.id
        if args.action == "retry":
            n = await store.requeue_dead(sink=args.sink, ids=ids, now=time.time())
            print(f"requeued {n} dead letter(s)")
        else:
            n = await store.purge_dead(sink=args.sink, ids=ids)
            print(f"purged {n} dead letter(s)")
        return 0
    finally:
        await store.close()


def cmd_dead_letters(args: argparse.Namespace) -> int:
    return asyncio.run(_dead_letters(_settings(args.config), args))


# -- replay ------------------------------------------------------------------------------


async def _replay(settings: Settings, args: argparse.Namespace) -> int:
    from receiver.reconcile import Reconciler, render_table
    from receiver.store import create_store

    if settings.upstream is None:
        print("bighub-siem: replay needs an [upstream] section in the config", file=sys.stderr)
        return 2
    store = create_store(settings.store)
    await store.open()
    try:
        reconciler = Reconciler(settings.upstream, store, source=settings.ingress.source)
        try:
            report = await reconciler.run(dry_run=args.dry_run, webhook_ids=args.webhook_id)
        except ValueError as exc:
            print(f"bighub-siem: --webhook-id: {exc}", file=sys.stderr)
            return 2
    finally:
        await store.close()
    print(render_table(report))
    return 0 if report.ok else 1


def cmd_replay(args: argparse.Namespace) -> int:
    from receiver.log import configure_logging

    settings = _settings(args.config)
    configure_logging(settings.log)  # logs to stderr; stdout carries the table
    return asyncio.run(_replay(settings, args))


# -- verify-archive ----------------------------------------------------------------------


def cmd_verify_archive(args: argparse.Namespace) -> int:
    from sinks import SinkError
    from sinks.s3.verify import run_verify

    try:
        report = run_verify(
            bucket=args.bucket,
            prefix=args.prefix,
            public_key_file=Path(args.public_key),
            endpoint_url=args.endpoint_url,
            region=args.region,
        )
    except (OSError, ValueError) as exc:
        print(f"bighub-siem: --public-key: {exc}", file=sys.stderr)
        return 2
    except SinkError as exc:  # could not read the archive: not a clean result
        print(f"bighub-siem: verify-archive: {exc}", file=sys.stderr)
        return 1
    for finding in report.findings:
        print(finding)
    print(report.summary())
    return 0 if report.ok else 1


# -- entry point ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bighub-siem", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--config", help=f"TOML file (default: ${CONFIG_ENV})")
        return sp

    sv = with_config(sub.add_parser("serve", help="run ingress, dispatchers and admin"))
    sv.add_argument(
        "--role",
        choices=("all", "ingress", "dispatch"),  # receiver.service.ROLES (imported lazily)
        default="all",
        help="all (default); ingress: webhooks + admin, no dispatchers; dispatch: dispatchers"
        " + admin, no webhook listener. Split roles need the PostgreSQL store.",
    )
    sv.set_defaults(func=cmd_serve)
    with_config(
        sub.add_parser("migrate", help="create or upgrade the store's schema, then exit")
    ).set_defaults(func=cmd_migrate)
    with_config(sub.add_parser("check-config", help="validate the configuration")).set_defaults(
        func=cmd_check_config
    )
    st = with_config(sub.add_parser("send-test", help="sign and send sample events"))
    st.add_argument("--url", default="http://127.0.0.1:8080/webhooks/bighub")
    st.add_argument("--secret", help="env:NAME or file:PATH (default: first secret in --config)")
    st.add_argument("--type", choices=["decision", "rule", "approval", "all"], default="all")
    st.add_argument("--count", type=int, default=3)
    st.add_argument("--timeout", type=float, default=10.0)
    st.set_defaults(func=cmd_send_test)
    rp = with_config(sub.add_parser("replay", help="ask BIGHUB to replay missed deliveries"))
    rp.add_argument("--dry-run", action="store_true", help="only list what would be asked")
    rp.add_argument("--webhook-id", action="append", help="this webhook only (repeatable)")
    rp.set_defaults(func=cmd_replay)
    dl = with_config(sub.add_parser("dead-letters", help="list, retry or purge dead letters"))
    dl.add_argument("action", choices=["list", "retry", "purge"])
    dl.add_argument("--sink")
    dl.add_argument("--id", type=int, action="append")
    dl.add_argument("--all", action="store_true")
    dl.add_argument("--limit", type=int, default=100)
    dl.set_defaults(func=cmd_dead_letters)
    va = sub.add_parser(
        "verify-archive", help="check an S3 archive's signed manifest chain and objects"
    )
    va.add_argument("--bucket", required=True)
    va.add_argument("--prefix", default="bighub-siem", help="the sink's prefix")
    va.add_argument("--public-key", required=True, help="Ed25519 public key file (PEM or raw)")
    va.add_argument("--endpoint-url", help="S3-compatible endpoint (default: AWS)")
    va.add_argument("--region")
    va.set_defaults(func=cmd_verify_archive)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from receiver.log import configure_logging
    from receiver.settings import LogSettings

    # Defaults until serve reads the configured level/format; logs never touch stdout.
    configure_logging(LogSettings())
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print("bighub-siem: configuration is invalid:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        flush_logs()
