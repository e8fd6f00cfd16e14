"""``serve``: ingress, dispatchers and the admin listener in one process.

Shutdown (SIGTERM / SIGINT) fits in ``serve.shutdown_grace_seconds``: the listeners stop
taking connections and answer the requests in flight (a quarter of the grace at most),
the dispatchers get what remains for their sends, and whatever still hangs then (a
client library stuck in a thread) is abandoned: the process exits 0 anyway (see
``_shutdown``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import socket
import sys
import time
from collections.abc import Coroutine, Iterator
from typing import TYPE_CHECKING, Any

import uvicorn

from receiver.cli._common import load, with_config
from receiver.cli._errors import listener_unavailable, store_unavailable
from receiver.cli._shutdown import exit_after, exit_unless_clean
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
    from receiver.service import Service

    try:
        service = Service(settings, role=role)
    except StoreError as exc:
        raise store_unavailable(settings.store, exc) from None
    # Listeners are bound before the store opens: a busy port is reported by its
    # setting's name, and nothing (no spool lock, no migration) happens before it.
    listeners = _bind_listeners(settings, role)
    try:
        await service.start()
    except (StoreError, OSError) as exc:
        for sock, _ in listeners:
            sock.close()
        with contextlib.suppress(Exception):
            await service.store.close()
        raise store_unavailable(settings.store, exc) from None
    grace = settings.serve.shutdown_grace_seconds
    servers = [
        (_server(_app(section, service), sock, _edge(section, settings, service), grace), sock)
        for sock, section in listeners
    ]
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    deadline = [float("inf")]

    def stop() -> None:
        if not stopping.is_set():
            deadline[0] = time.monotonic() + grace
            exit_after(grace + _HARD_STOP_MARGIN)  # the last resort, if even this hangs
        stopping.set()
        for s, _ in servers:
            s.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    flusher = asyncio.create_task(_flush_logs_periodically())
    listening = asyncio.create_task(
        _mark_listening(servers[0][0], service) if servers else asyncio.sleep(0)
    )
    try:
        if servers:
            await asyncio.gather(*(s.serve(sockets=[sock]) for s, sock in servers))
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


def _edge(section: str, settings: Settings, service: Service) -> Edge:
    if section == "ingress":
        return Edge("ingress", EdgeLimits.from_settings(settings.ingress), service.metrics)
    limits = EdgeLimits.from_settings(
        settings.ingress, max_connections=settings.admin.max_connections
    )
    return Edge("admin", limits, service.metrics)


def _bind_listeners(settings: Settings, role: Role) -> list[tuple[socket.socket, str]]:
    """One bound socket per listener this role runs, with the section it comes from.

    Raises:
        CommandError: a listener cannot bind (exit code 5); none stays bound.
    """
    wanted = (
        [] if role == "dispatch" else [("ingress", settings.ingress.host, settings.ingress.port)]
    )
    if settings.admin.enabled:
        wanted.append(("admin", settings.admin.host, settings.admin.port))
    bound: list[tuple[socket.socket, str]] = []
    try:
        for section, host, port in wanted:
            bound.append((_bind(section, host, port), section))
    except BaseException:
        for sock, _ in bound:
            sock.close()
        raise
    return bound


def _bind(section: str, host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise listener_unavailable(section, host, port, exc) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise listener_unavailable(section, host, port, exc) from None
    return sock


def _app(section: str, service: Service) -> Any:
    from receiver.admin import create_admin_app
    from receiver.app import create_app

    if section == "ingress":
        return create_app(service, manage_service=False)
    return create_admin_app(service)


def _server(app: Any, sock: socket.socket, edge: Edge, grace: float) -> _Server:
    # uvicorn is handed the bound socket: it never binds, nor exits with its own code.
    host, port = sock.getsockname()[:2]
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
    # The event loop thread and the SQLite writer thread hand the GIL back and forth
    # (the writer takes it twice per group commit: to bind the group, and after the
    # fsync). A thread that wants it waits up to one switch interval while the other
    # runs Python: the default 5 ms convoys responses, and at 0.5 ms the two waits still
    # tripled an 0.3 ms commit while the loop was busy. 0.1 ms: +8 % req/s (6 alternating
    # rounds, tests/bench/RESULTS.md), the CPU per request unchanged.
    sys.setswitchinterval(0.0001)
    # Objects made at start-up (settings, app, routes) never die: keep them out of every
    # collection, and collect the young generation less often; per-request garbage is
    # small and short-lived, and full collections were the p99 outliers.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    return exit_unless_clean(run_loop(_serve(settings, args.role)))


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
