"""``/healthz`` and ``/readyz`` (the webhook route is ``receiver.webhook``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from receiver.service import Service

__all__ = ["healthz", "readyz"]


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    service: Service = request.app.state.service
    writable = await service.store_writable()
    # Sink error text (host names, broker messages) is for operators: the admin listener
    # shows it; the public ingress listener only says up or down.
    detail = getattr(request.app.state, "readyz_detail", False)
    sinks = {
        name: {"up": d.up, "detail": d.detail} if detail else {"up": d.up}
        for name, d in sorted(service.dispatchers.items())
    }
    body = {
        "status": "ready" if writable else "not_ready",
        "store": "writable" if writable else "unavailable",
        "sinks": sinks,
    }
    return JSONResponse(body, status_code=200 if writable else 503)
