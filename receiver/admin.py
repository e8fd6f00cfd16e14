"""The admin listener: ``/metrics`` and the token-protected ``/admin/`` API.

It binds to loopback by default and is separate from ingress so that the port
BIGHUB can reach never exposes operations.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver.app import json_http_errors
from receiver.endpoints import healthz, readyz
from receiver.service import Service

__all__ = ["create_admin_app"]


def _authorized(request: Request, service: Service) -> bool:
    token = service.settings.admin.token
    if token is None:
        return False
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode(), token.get_secret_value().encode())


def _unauthorized() -> Response:
    return JSONResponse(
        {"error": "unauthorized", "detail": "a valid Bearer token is required"},
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="bighub-siem-admin"'},
    )


async def metrics(request: Request) -> Response:
    service: Service = request.app.state.service
    await service.refresh_metrics()
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def _selection(request: Request) -> tuple[str | None, list[int] | None]:
    raw = await request.body()
    if len(raw) > 1024 * 1024:
        raise ValueError("body too large")
    data: Any = json.loads(raw) if raw.strip() else {}
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    sink, ids = data.get("sink"), data.get("ids")
    if sink is not None and not isinstance(sink, str):
        raise ValueError("sink must be a string")
    if ids is not None and not (
        isinstance(ids, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
    ):
        raise ValueError("ids must be a list of integers")
    return sink, ids


async def dead_letters(request: Request) -> Response:
    service: Service = request.app.state.service
    if not _authorized(request, service):
        return _unauthorized()
    try:
        limit = min(1000, max(1, int(request.query_params.get("limit", "100"))))
        after = max(0, int(request.query_params.get("after", "0")))
    except ValueError:
        return JSONResponse({"error": "bad_request", "detail": "limit/after must be integers"}, 400)
    state = request.query_params.get("state", "dead")
    if state not in ("dead", "requeued", "all"):
        return JSONResponse(
            {"error": "bad_request", "detail": "state must be dead, requeued or all"}, 400
        )
    rows = await service.store.dead_letters(
        sink=request.query_params.get("sink"),
        limit=limit,
        after_id=after,
        state=state,  # type: ignore[arg-type]
    )
    return JSONResponse(
        {
            "dead_letters": [
                {
                    "id": r.id,
                    "sink": r.sink,
                    "event_id": r.event_id,
                    "event_type": r.event_type,
                    "received_at": r.received_at,
                    "attempts": r.attempts,
                    "dead_at": r.dead_at,
                    "error": r.error,
                    "state": r.state,
                }
                for r in rows
            ],
            "next_after": rows[-1].id if len(rows) == limit else None,
        }
    )


async def _dead_letter_action(request: Request, action: str) -> Response:
    service: Service = request.app.state.service
    if not _authorized(request, service):
        return _unauthorized()
    try:
        sink, ids = await _selection(request)
    except ValueError as exc:
        return JSONResponse({"error": "bad_request", "detail": str(exc)}, 400)
    if action == "retry":
        count = await service.store.requeue_dead(sink=sink, ids=ids, now=service.clock())
        service.notify_requeued(sink)
        return JSONResponse({"requeued": count})
    count = await service.store.purge_dead(sink=sink, ids=ids)
    return JSONResponse({"purged": count})


async def retry_dead(request: Request) -> Response:
    return await _dead_letter_action(request, "retry")


async def purge_dead(request: Request) -> Response:
    return await _dead_letter_action(request, "purge")


async def _replay_options(request: Request) -> tuple[bool, list[str] | None]:
    raw = await request.body()
    if len(raw) > 64 * 1024:
        raise ValueError("body too large")
    data: Any = json.loads(raw) if raw.strip() else {}
    if not isinstance(data, dict) or set(data) - {"dry_run", "webhook_id"}:
        raise ValueError('body must be a JSON object with only "dry_run" and "webhook_id"')
    dry_run, webhook_id = data.get("dry_run", False), data.get("webhook_id")
    if not isinstance(dry_run, bool):
        raise ValueError("dry_run must be true or false")
    if webhook_id is not None and not isinstance(webhook_id, str):
        raise ValueError("webhook_id must be a string")
    return dry_run, [webhook_id] if webhook_id else None


async def replay(request: Request) -> Response:
    """Run the reconciler once; answer its report (200 even when it met API errors)."""
    service: Service = request.app.state.service
    if not _authorized(request, service):
        return _unauthorized()
    reconciler = service.reconciler
    if reconciler is None:
        return JSONResponse(
            {"error": "upstream_not_configured", "detail": "the config has no [upstream]"}, 409
        )
    try:
        dry_run, webhook_ids = await _replay_options(request)
    except ValueError as exc:
        return JSONResponse({"error": "bad_request", "detail": str(exc)[:200]}, 400)
    if reconciler.running:
        return JSONResponse({"error": "replay_running", "detail": "a run is in progress"}, 409)
    try:
        report = await reconciler.run(dry_run=dry_run, webhook_ids=webhook_ids)
    except ValueError as exc:
        return JSONResponse({"error": "bad_request", "detail": str(exc)}, 400)
    return JSONResponse(report.to_dict())


def create_admin_app(service: Service) -> Starlette:
    """The admin / metrics listener; it never starts or stops the service."""
    app = Starlette(
        routes=[
            Route("/metrics", metrics, methods=["GET"]),
            # Probes for every role, including dispatch replicas that have no ingress listener.
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/admin/dead-letters", dead_letters, methods=["GET"]),
            Route("/admin/dead-letters/retry", retry_dead, methods=["POST"]),
            Route("/admin/dead-letters/purge", purge_dead, methods=["POST"]),
            Route("/admin/replay", replay, methods=["POST"]),
        ],
        exception_handlers=dict(json_http_errors),
    )
    app.state.service = service
    app.state.readyz_detail = True
    return app
