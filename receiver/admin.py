"""The admin listener: ``/metrics`` and the token-protected ``/admin/`` API.

It binds to loopback by default and is separate from ingress so that the port
BIGHUB can reach never exposes operations.
"""

from __future__ import annotations

import hmac
import json
import re
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver.app import RequestLines, json_http_errors
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


# Ids are SQLite INTEGER / PostgreSQL bigint: anything past this never names a row and
# would overflow the driver (a 500) instead of matching nothing.
_MAX_ID = 2**63 - 1
_MAX_IDS = 10_000
_DIGITS = re.compile(r"[0-9]{1,19}")
_SINK = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # SinkConfig.name
_WEBHOOK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")  # UpstreamSettings.webhook_ids


class _BadRequest(Exception):
    """A malformed admin parameter; the text says which and what is allowed."""

    status, code = 400, "bad_request"


class _TooLarge(_BadRequest):
    status, code = 413, "body_too_large"


def _bad_request(exc: _BadRequest) -> Response:
    return JSONResponse({"error": exc.code, "detail": str(exc)}, exc.status)


def _query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise _BadRequest(f"{name} must be an integer from {low} to {high}")
    return int(raw)


def _sink_param(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _SINK.fullmatch(value):
        raise _BadRequest("sink must be a sink name (1-64 letters, digits, _ . -)")
    return value


async def _json_body(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object (empty body: {}), read with a hard size limit."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge(f"body is over {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        data: Any = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise _BadRequest("body is not UTF-8 JSON, or is nested too deeply") from None
    if not isinstance(data, dict):
        raise _BadRequest("body must be a JSON object")
    return data


async def _selection(request: Request) -> tuple[str | None, list[int] | None]:
    data = await _json_body(request, 1024 * 1024)
    unknown = set(data) - {"sink", "ids"}
    if unknown:
        raise _BadRequest('body may hold only "sink" and "ids"')
    sink, ids = _sink_param(data.get("sink")), data.get("ids")
    if ids is not None and not (
        isinstance(ids, list)
        and len(ids) <= _MAX_IDS
        and all(isinstance(i, int) and not isinstance(i, bool) and 1 <= i <= _MAX_ID for i in ids)
    ):
        raise _BadRequest(f"ids must be a list of at most {_MAX_IDS} integers from 1 to {_MAX_ID}")
    return sink, ids


async def dead_letters(request: Request) -> Response:
    service: Service = request.app.state.service
    if not _authorized(request, service):
        return _unauthorized()
    try:
        limit = _query_int(request, "limit", 100, 1, 1000)
        after = _query_int(request, "after", 0, 0, _MAX_ID)
        sink = _sink_param(request.query_params.get("sink"))
        state = request.query_params.get("state", "dead")
        if state not in ("dead", "requeued", "all"):
            raise _BadRequest("state must be dead, requeued or all")
    except _BadRequest as exc:
        return _bad_request(exc)
    rows = await service.store.dead_letters(
        sink=sink,
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
    except _BadRequest as exc:
        return _bad_request(exc)
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
    data = await _json_body(request, 64 * 1024)
    if set(data) - {"dry_run", "webhook_id"}:
        raise _BadRequest('body must be a JSON object with only "dry_run" and "webhook_id"')
    dry_run, webhook_id = data.get("dry_run", False), data.get("webhook_id")
    if not isinstance(dry_run, bool):
        raise _BadRequest("dry_run must be true or false")
    if webhook_id is not None and not (
        isinstance(webhook_id, str) and _WEBHOOK_ID.fullmatch(webhook_id)
    ):
        raise _BadRequest("webhook_id must be a webhook id (letters, digits, _ . : -)")
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
    except _BadRequest as exc:
        return _bad_request(exc)
    if reconciler.running:
        return JSONResponse({"error": "replay_running", "detail": "a run is in progress"}, 409)
    try:
        report = await reconciler.run(dry_run=dry_run, webhook_ids=webhook_ids)
    except ValueError as exc:
        return JSONResponse({"error": "bad_request", "detail": str(exc)}, 400)
    return JSONResponse(report.to_dict())


def create_admin_app(service: Service) -> RequestLines:
    """The admin / metrics listener; it never starts or stops the service."""
    routes = [
        Route("/metrics", metrics, methods=["GET"]),
        # Probes for every role, including dispatch replicas that have no ingress listener.
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/admin/dead-letters", dead_letters, methods=["GET"]),
        Route("/admin/dead-letters/retry", retry_dead, methods=["POST"]),
        Route("/admin/dead-letters/purge", purge_dead, methods=["POST"]),
        Route("/admin/replay", replay, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers=dict(json_http_errors))
    app.state.service = service
    app.state.readyz_detail = True
    return RequestLines(app, "admin", service.metrics, (r.path for r in routes))
