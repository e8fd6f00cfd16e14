"""The webhook endpoint, ``/healthz`` and ``/readyz``.

The order of checks is a security decision: cheap header checks first, the body
read with a hard limit, the signature verified over the raw bytes, and only then
is anything parsed. Nothing is stored unless every check passed, and the answer
to a new event goes out only after the store's durable commit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from receiver import signatures
from receiver.envelope import parse_envelope
from receiver.errors import (
    EnvelopeError,
    EventRefusedError,
    OverloadedError,
    SignatureError,
    StoreError,
)
from receiver.service import Service
from receiver.store import IngestOutcome, NewEvent

__all__ = ["healthz", "readyz", "webhook"]

log = structlog.get_logger(component="bighub_siem.ingress")
_ENCODER = json.JSONEncoder(separators=(",", ":"))


class _Refusal(Exception):
    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None):
        self.status, self.code, self.detail, self.headers = status, code, detail, headers or {}


def _error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json"


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _Refusal(413, "body_too_large", f"body is over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    # Counted while streaming: a lying or absent Content-Length cannot make us buffer more.
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _Refusal(413, "body_too_large", f"body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _alive(request: Request) -> Callable[[], bool] | None:
    """False once the client has gone, where the server tells (uvicorn does, through its
    request cycle's ``disconnected`` flag); None where it cannot be known."""
    cycle = getattr(request.receive, "__self__", None)
    if cycle is None or not hasattr(cycle, "disconnected"):
        return None
    return lambda: not cycle.disconnected


async def _handle(request: Request, service: Service) -> tuple[int, dict[str, str]]:
    cfg = service.settings.ingress
    if not _is_json(request.headers.get("content-type")):
        raise _Refusal(415, "unsupported_media_type", "Content-Type must be application/json")
    body = await _read_body(request, cfg.max_body_bytes)
    signature = request.headers.get(cfg.signature_header)
    timestamp = request.headers.get(cfg.timestamp_header)
    try:
        signatures.verify(
            body,
            signature=signature,
            timestamp=timestamp,
            secrets=service.secrets,
            tolerance_seconds=cfg.tolerance_seconds,
            now=service.clock,
        )
    except SignatureError as exc:
        raise _Refusal(401, exc.code, str(exc)) from None
    try:
        env = parse_envelope(
            body,
            request.headers,
            {
                "event_id": cfg.event_id_header,
                "event_type": cfg.event_type_header,
                "delivery_id": cfg.delivery_id_header,
            },
        )
    except EnvelopeError as exc:
        raise _Refusal(400, exc.code, exc.detail) from None
    except Exception as exc:  # a parser bug must still answer a JSON 4xx and store nothing
        # The type only: an exception's text or traceback may quote the body.
        log.error("envelope_parser_failed", error=type(exc).__name__)
        raise _Refusal(400, "invalid_envelope", "the body could not be read as an event") from None
    structlog.contextvars.bind_contextvars(event_id=env.event_id, event_type=env.event_type)
    routed = service.router.route(env.event_type)
    new = NewEvent(
        source=cfg.source,
        event_id=env.event_id,
        id_origin=env.id_origin,
        event_type=env.event_type,
        category=env.category,
        occurred_at=env.occurred_at,
        received_at=service.clock(),
        delivery_id=env.delivery_id,
        body=body,
        signature=signature,
        timestamp=timestamp,
        sinks=routed,
    )
    retry_after = {"Retry-After": str(service.settings.store.retry_after_seconds)}
    try:
        result = await service.store.ingest(new, alive=_alive(request))
    except OverloadedError as exc:
        raise _Refusal(503, "overloaded", str(exc), retry_after) from None
    except EventRefusedError as exc:
        log.error("store_refused_event", error=str(exc)[:200])
        raise _Refusal(
            503,
            "store_refused_event",
            "the store cannot hold this event (see the log)",
            retry_after,
        ) from None
    except StoreError:
        log.error("store_unavailable")
        raise _Refusal(
            503, "store_unavailable", "the spool cannot take writes now", retry_after
        ) from None
    if result.outcome is IngestOutcome.QUOTA:
        raise _Refusal(503, "spool_full", "the spool is over its quota; retry later", retry_after)
    if result.outcome is IngestOutcome.DUPLICATE:
        service.metrics.duplicates.inc()
        return 200, {"status": "duplicate", "event_id": env.event_id}
    service.metrics.accepted.inc()
    service.notify(routed)
    return 202, {"status": "accepted", "event_id": env.event_id}


async def webhook(request: Request) -> Response:
    service: Service = request.app.state.service
    started = time.perf_counter()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=service.next_request_id())
    service.metrics.received.inc()
    try:
        status, payload = await _handle(request, service)
    except _Refusal as refusal:
        service.metrics.rejected.labels(refusal.code).inc()
        log.info(
            "webhook",
            status=refusal.status,
            error=refusal.code,
            seconds=round(time.perf_counter() - started, 5),
        )
        return _error(refusal.status, refusal.code, refusal.detail, refusal.headers)
    elapsed = time.perf_counter() - started
    service.metrics.ingest_latency.observe(elapsed)
    log.info("webhook", status=status, outcome=payload["status"], seconds=round(elapsed, 5))
    return Response(_ENCODER.encode(payload), status_code=status, media_type="application/json")


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
