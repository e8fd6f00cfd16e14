"""The ingress ASGI app: the webhook route served directly, everything else by Starlette.

The webhook path is the hot path and needs none of what Starlette adds per request
(request object, routing regexes, middleware layers), so ``IngressApp`` hands it to
``receiver.webhook.Webhook`` by an exact path compare. Probes and unknown paths go to
a small Starlette app wrapped in ``RequestLines``: one line and one count per request,
and JSON errors only.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver.edge import where
from receiver.endpoints import healthz, readyz
from receiver.errors import RequestBodyError
from receiver.log import request_line
from receiver.metrics import Metrics
from receiver.service import Service
from receiver.webhook import Webhook

__all__ = ["IngressApp", "RequestLines", "create_app", "json_http_errors"]

log = structlog.get_logger(component="bighub_siem.http")


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
    headers = exc.headers if isinstance(exc, HTTPException) else None
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


async def _body_error(request: Request, exc: Exception) -> Response:
    status, code, detail = 400, "bad_request", "the request body could not be read"
    if isinstance(exc, RequestBodyError):
        status, code, detail = exc.status, exc.code, exc.detail
    return JSONResponse(
        {"error": code, "detail": detail}, status_code=status, headers={"Connection": "close"}
    )


async def _internal_error(request: Request, exc: Exception) -> Response:
    # Starlette answers this, then re-raises to the server; RequestLines logs it once.
    return JSONResponse({"error": "internal_error", "detail": "internal error"}, status_code=500)


json_http_errors: dict[Any, Any] = {
    HTTPException: _http_error,
    RequestBodyError: _body_error,
    Exception: _internal_error,
}


class RequestLines:
    """One ``http`` line and one ``bighub_siem_http_requests`` count per request.

    Successful answers are logged at debug (probes and scrapes would drown the log),
    errors at info. Only known route paths become metric labels; the line shows the
    path (without query string), cut to 200 characters.
    """

    def __init__(self, app: Any, listener: str, metrics: Metrics, routes: Iterable[str]) -> None:
        self.app = app
        self.listener = listener
        self.counter = metrics.http_requests
        self.routes = frozenset(routes)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: int | None = None

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            # Starlette has answered (JSON 500) and re-raised: log where, once, and stop
            # here so the server does not log a traceback.
            log.error("http_app_failed", error=type(exc).__name__, where=where(exc))
            status = 500 if status is None else status
        path = scope["path"]
        route = path if path in self.routes else "other"
        self.counter.labels(self.listener, route, str(status)).inc()
        request_line(
            "http",
            "debug" if status is not None and status < 400 else "info",
            listener=self.listener,
            method=scope["method"][:16],
            path=path[:200],
            status=status,
            seconds=round(time.perf_counter() - started, 5),
        )


class IngressApp:
    """The webhook listener's ASGI app."""

    def __init__(self, webhook: Webhook, path: str, others: Starlette, metrics: Metrics) -> None:
        self.webhook = webhook
        self.path = path
        self.starlette = others
        self.others = RequestLines(others, "ingress", metrics, ("/healthz", "/readyz"))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == self.path:
            await self.webhook(scope, receive, send)
        else:  # probes, unknown paths, and the lifespan
            await self.others(scope, receive, send)


def create_app(service: Service, *, manage_service: bool = True) -> IngressApp:
    """The webhook listener.

    Args:
        service: the running service (store, dispatchers, metrics).
        manage_service: start and stop ``service`` with the app's lifespan; ``serve``
            passes False because it shares the service with the admin listener.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_service:
            await service.start()
        try:
            yield
        finally:
            if manage_service:
                await service.stop()

    others = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        exception_handlers=dict(json_http_errors),
        lifespan=lifespan,
    )
    others.state.service = service
    path = service.settings.ingress.path
    return IngressApp(Webhook(service), path, others, service.metrics)
