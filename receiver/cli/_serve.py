"""``serve``: ingress, dispatchers and the admin listener in one process.

Shutdown (SIGTERM / SIGINT) fits in ``serve.shutdown_grace_seconds``: the listeners stop
taking connections and answer the requests in flight (a quarter of the grace at most),
the dispatchers get what remains for their sends, and whatever still hangs then (a
client library stuck in a thread) is abandoned: the process exits 0 anyway. Nothing
acknowledged can be lost by that: every 2xx was committed before it was sent, and an
abandoned send recorded nothing, so its events go out again after the restart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import TYPE_CHECKING, Any

import uvicorn

from receiver.cli._common import load, with_config
from receiver.edge import Edge, EdgeLimits, protocol_for
from receiver.errors import StoreError
from receiver.log import flush_logs
from receiver.settings import Settings

if TYPE_CHECKING:
    from receiver.service import Role, Service

__all__ = ["register", "run_loop"]


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
    grace = settings.serve.shutdown_grace_seconds
    servers: list[_Server] = []
    if role != "dispatch":  # a dispatch replica takes no webhooks
        app = create_app(service, manage_service=False)
        edge = Edge("ingress", EdgeLimits.from_settings(settings.ingress), service.metrics)
        servers.append(_server(app, settings.ingress.host, settings.ingress.port, edge, grace))
    if settings.admin.enabled:
        limits = EdgeLimits.from_settings(
            settings.ingress, max_connections=settings.admin.max_connections
        )
        edge = Edge("admin", limits, service.metrics)
        admin = create_admin_app(service)
        servers.append(_server(admin, settings.admin.host, settings.admin.port, edge, grace))
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    deadline = [float("inf")]

    def stop() -> None:
        if not stopping.is_set():
            deadline[0] = time.monotonic() + grace
            _exit_after(grace + _HARD_STOP_MARGIN)  # the last resort, if even this hangs
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
        await service.stop(max(1.0, deadline[0] - time.monotonic() - _CLOSE_MARGIN))
        flusher.cancel()
        flush_logs()
    return 0


_HARD_STOP_MARGIN = 2.0  # seconds past the grace before the watchdog ends the process
_CLOSE_MARGIN = 1.0  # seconds of the grace kept for closing the store


def _exit_after(seconds: float) -> None:
    """End the process with 0 after ``seconds``, whatever it is doing then."""

    def run() -> None:
        time.sleep(seconds)
        _exit_now(0, "shutdown_grace_exceeded")

    threading.Thread(target=run, name="shutdown-watchdog", daemon=True).start()


def _exit_now(code: int, reason: str) -> None:
    import structlog

    structlog.get_logger(component="bighub_siem.serve").warning(reason)
    flush_logs()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _server(app: Any, host: str, port: int, edge: Edge, grace: float) -> _Server:
    return _Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            # The edge protocol enforces every limit (receiver/edge/); uvicorn's own
            # limit_concurrency would answer text/plain after reading the headers.
            http=protocol_for(edge),
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            # No X-Forwarded-For rewriting: nothing reads scope["client"], and the
            # middleware would run on every request.
            proxy_headers=False,
            # Requests in flight get a quarter of the grace; dispatchers the rest.
            timeout_graceful_shutdown=max(1, int(grace / 4)),
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

    settings = load(args.config)
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
    code = run_loop(_serve(settings, args.role))
    stuck = [t for t in threading.enumerate() if t.is_alive() and not t.daemon]
    if len(stuck) > 1:  # besides the main thread: abandoned client calls; do not join them
        _exit_now(code, "abandoned_threads_left")
    return code


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop when installed (uvicorn[standard] brings it), else asyncio."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is absent on some platforms
        return asyncio.run(main)
    return uvloop.run(main)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sv = with_config(sub.add_parser("serve", help="run ingress, dispatchers and admin"))
    sv.add_argument(
        "--role",
        choices=("all", "ingress", "dispatch"),  # receiver.service.ROLES (imported lazily)
        default="all",
        help="all (default); ingress: webhooks + admin, no dispatchers; dispatch: dispatchers"
        " + admin, no webhook listener. Split roles need the PostgreSQL store.",
    )
    sv.set_defaults(func=cmd_serve)
