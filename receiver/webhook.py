"""The webhook route as a plain ASGI callable: the service's hot path.

The order of checks is a security decision: content type, then the signature and
timestamp headers (well-formed, timestamp within tolerance) and the declared length,
all before a byte of the body is read; then the body, counted against its limit while
it streams; then the MAC over the raw bytes; only then is anything parsed. Nothing is
stored unless every check passed, and the answer to a new event goes out only after
the store's durable commit.

Once the signature has verified, the delivery is BIGHUB's: a failure of ours (a
parser bug, the store) answers 503 with Retry-After so BIGHUB retries, never a 4xx
that tells it to drop the event.

Every request ends in exactly one ``webhook`` line and one outcome metric (accepted,
duplicate, or rejected by reason), including clients that leave mid-body.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from json.encoder import encode_basestring_ascii
from typing import Any

import structlog
from prometheus_client import Counter

from receiver import signatures
from receiver.edge import where
from receiver.envelope import parse_envelope
from receiver.errors import (
    EnvelopeError,
    EventRefusedError,
    OverloadedError,
    RequestBodyError,
    SignatureError,
    StoreError,
)
from receiver.log import request_line
from receiver.service import Service
from receiver.store import IngestOutcome, NewEvent

__all__ = ["Webhook"]

log = structlog.get_logger(component="bighub_siem.ingress")
_ENCODER = json.JSONEncoder(separators=(",", ":"))
_JSON = (b"content-type", b"application/json")
_CLOSE = (b"connection", b"close")

Scope = dict[str, Any]
Message = dict[str, Any]


class _Refusal(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        retry: bool = False,
        close: bool = False,
    ) -> None:
        self.status, self.code, self.detail = status, code, detail
        self.retry, self.close = retry, close


class _Disconnected(Exception):
    """The client went away before its body arrived: nobody to answer."""


class Webhook:
    """``POST <ingress.path>``: verify, parse, store, answer."""

    def __init__(self, service: Service) -> None:
        cfg = service.settings.ingress
        self.service = service
        self.limit = cfg.max_body_bytes
        self.tolerance = cfg.tolerance_seconds
        self.source = cfg.source
        self.retry_after = str(service.settings.store.retry_after_seconds).encode()
        # Header name (lower-case bytes, as the server hands them over) -> our key.
        self.wanted = {
            b"content-type": "content-type",
            b"content-length": "content-length",
            cfg.signature_header.lower().encode("latin-1"): "signature",
            cfg.timestamp_header.lower().encode("latin-1"): "timestamp",
            cfg.event_id_header.lower().encode("latin-1"): "event_id",
            cfg.event_type_header.lower().encode("latin-1"): "event_type",
            cfg.delivery_id_header.lower().encode("latin-1"): "delivery_id",
        }
        self.names = {k: k for k in ("event_id", "event_type", "delivery_id")}
        self.rejected: dict[str, Counter] = {}
        self.keys = signatures.Keys(service.secrets)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        started = time.perf_counter()
        service = self.service
        request_id = service.next_request_id()
        service.metrics.received.inc()
        fields: dict[str, str | None] = {"event_id": None, "event_type": None}
        try:
            status, answer = await self._handle(scope, receive, request_id, fields)
        except _Refusal as refusal:
            self._count_rejected(refusal.code)
            request_line(
                "webhook",
                "info",
                request_id=request_id,
                status=refusal.status,
                error=refusal.code,
                **fields,
                seconds=round(time.perf_counter() - started, 5),
            )
            await self._refuse(send, refusal)
            return
        except _Disconnected:
            self._count_rejected("client_disconnect")
            request_line(
                "webhook",
                "info",
                request_id=request_id,
                status=None,
                error="client_disconnect",
                **fields,
                seconds=round(time.perf_counter() - started, 5),
            )
            return
        except asyncio.CancelledError:
            # Shutdown past its grace period: the edge answers 503 (BIGHUB retries; an
            # event committed meanwhile is then a duplicate). Still one line and count.
            self._count_rejected("shutting_down")
            request_line(
                "webhook",
                "info",
                request_id=request_id,
                status=503,
                error="shutting_down",
                **fields,
                seconds=round(time.perf_counter() - started, 5),
            )
            raise
        elapsed = time.perf_counter() - started
        service.metrics.ingest_latency.observe(elapsed)
        request_line(
            "webhook",
            "info",
            request_id=request_id,
            status=status,
            outcome=answer["status"],
            **fields,
            seconds=round(elapsed, 5),
        )
        # What the JSON encoder writes for this two-key object, without its generic walk.
        body = (
            f'{{"status":"{answer["status"]}","event_id":'
            f"{encode_basestring_ascii(answer['event_id'])}}}".encode()
        )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [_JSON, (b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _count_rejected(self, code: str) -> None:
        counter = self.rejected.get(code)
        if counter is None:
            counter = self.rejected[code] = self.service.metrics.rejected.labels(code)
        counter.inc()

    async def _refuse(self, send: Any, refusal: _Refusal) -> None:
        body = _ENCODER.encode({"error": refusal.code, "detail": refusal.detail}).encode()
        headers = [_JSON, (b"content-length", str(len(body)).encode())]
        if refusal.retry:
            headers.append((b"retry-after", self.retry_after))
        if refusal.close:
            headers.append(_CLOSE)
        if refusal.status == 405:
            headers.append((b"allow", b"POST"))
        await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _handle(
        self, scope: Scope, receive: Any, request_id: str, fields: dict[str, str | None]
    ) -> tuple[int, dict[str, str]]:
        if scope["method"] != "POST":
            raise _Refusal(405, "method_not_allowed", "use POST", close=True)
        headers = self._headers(scope)
        if not _is_json(headers.get("content-type")):
            raise _Refusal(
                415, "unsupported_media_type", "Content-Type must be application/json", close=True
            )
        try:
            signed = signatures.check_headers(
                signature=headers.get("signature"),
                timestamp=headers.get("timestamp"),
                tolerance_seconds=self.tolerance,
                now=self.service.clock,
            )
        except SignatureError as exc:
            raise _Refusal(401, exc.code, str(exc), close=True) from None
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            raise _Refusal(413, "body_too_large", f"body is over {self.limit} bytes", close=True)
        body = await self._read_body(receive)
        try:
            signatures.check_mac(body, signed, self.keys)
        except SignatureError as exc:
            raise _Refusal(401, exc.code, str(exc)) from None
        try:
            return await self._store(body, headers, request_id, fields, _alive(receive))
        except _Refusal:
            raise
        except Exception as exc:
            # Verified, so it is BIGHUB's event: a bug of ours must not make it drop it.
            log.error(
                "webhook_failed", request_id=request_id, error=type(exc).__name__, where=where(exc)
            )
            raise _Refusal(
                503, "internal_error", "the event could not be processed; retry later", retry=True
            ) from None

    def _headers(self, scope: Scope) -> dict[str, str]:
        found: dict[str, str] = {}
        wanted = self.wanted
        for name, value in scope["headers"]:
            key = wanted.get(name)
            if key is not None and key not in found:  # the first of repeated headers
                found[key] = value.decode("latin-1")
        return found

    async def _read_body(self, receive: Any) -> bytes:
        chunks: list[bytes] = []
        size = 0
        more = True
        # Counted while streaming: a lying or absent Content-Length cannot make us buffer more.
        while more:
            try:
                message = await receive()
            except RequestBodyError as exc:  # the edge's body timeout or framing checks
                raise _Refusal(exc.status, exc.code, exc.detail, close=True) from None
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            if chunk:
                size += len(chunk)
                if size > self.limit:
                    raise _Refusal(
                        413, "body_too_large", f"body is over {self.limit} bytes", close=True
                    )
                chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _store(
        self,
        body: bytes,
        headers: dict[str, str],
        request_id: str,
        fields: dict[str, str | None],
        alive: Callable[[], bool] | None = None,
    ) -> tuple[int, dict[str, str]]:
        service = self.service
        try:
            env = parse_envelope(body, headers, self.names)
        except EnvelopeError as exc:
            raise _Refusal(400, exc.code, exc.detail) from None
        fields["event_id"], fields["event_type"] = env.event_id, env.event_type
        routed = service.router.route(env.event_type)
        new = NewEvent(
            source=self.source,
            event_id=env.event_id,
            id_origin=env.id_origin,
            event_type=env.event_type,
            category=env.category,
            occurred_at=env.occurred_at,
            received_at=service.clock(),
            delivery_id=env.delivery_id,
            body=body,
            signature=headers.get("signature"),
            timestamp=headers.get("timestamp"),
            sinks=routed,
        )
        try:
            result = await service.store.ingest(new, alive=alive)
        except OverloadedError as exc:  # admission control: queue full, deadline, client gone
            raise _Refusal(503, "overloaded", str(exc), retry=True) from None
        except EventRefusedError as exc:
            log.error("store_refused_event", request_id=request_id, error=str(exc)[:200])
            raise _Refusal(
                503,
                "store_refused_event",
                "the store cannot hold this event (see the log)",
                retry=True,
            ) from None
        except StoreError as exc:
            log.error("store_unavailable", request_id=request_id, error=type(exc).__name__)
            raise _Refusal(
                503, "store_unavailable", "the spool cannot take writes now", retry=True
            ) from None
        if result.outcome is IngestOutcome.QUOTA:
            raise _Refusal(
                503, "spool_full", "the spool is over its quota; retry later", retry=True
            )
        if result.outcome is IngestOutcome.DUPLICATE:
            service.metrics.duplicates.inc()
            return 200, {"status": "duplicate", "event_id": env.event_id}
        service.metrics.accepted.inc()
        service.notify(routed)
        return 202, {"status": "accepted", "event_id": env.event_id}


def _alive(receive: Any) -> Callable[[], bool] | None:
    """False once the client has gone, where the server tells (uvicorn's request cycle
    has a ``disconnected`` flag behind its ``receive``); None where it cannot be known."""
    cycle = getattr(receive, "__self__", None)
    if cycle is None or not hasattr(cycle, "disconnected"):
        return None
    return lambda: not cycle.disconnected


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json"
