"""The ingress ASGI app. ``create_app`` wires routes and the service's lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver.endpoints import healthz, readyz, webhook
from receiver.service import Service

__all__ = ["create_app", "json_http_errors"]


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
    headers = exc.headers if isinstance(exc, HTTPException) else None
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


json_http_errors = {HTTPException: _http_error}


def create_app(service: Service, *, manage_service: bool = True) -> Starlette:
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

    app = Starlette(
        routes=[
            Route(service.settings.ingress.path, webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        exception_handlers=dict(json_http_errors),
        lifespan=lifespan,
    )
    app.state.service = service
    return app
