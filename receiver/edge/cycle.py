"""One request on an edge connection: uvicorn's request/response cycle, with the body
failures the protocol detects raised from ``receive``, JSON error answers, and the
response head held back so head and body leave in one ``send()`` syscall.
"""

from __future__ import annotations

import asyncio
import traceback
from pathlib import Path
from typing import Any

import structlog
from uvicorn._types import ASGI3Application, ASGIReceiveEvent
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    RequestResponseCycle,
)

from receiver.errors import RequestBodyError

__all__ = ["EdgeCycle", "where"]

log = structlog.get_logger(component="bighub_siem.edge")


def where(exc: BaseException) -> str:
    """File, line and function where ``exc`` was raised, without its message.

    An exception's text may quote the request (a JSON decoder's message does); its
    location is enough to find the bug.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "unknown"
    last = frames[-1]
    return f"{Path(last.filename).name}:{last.lineno} in {last.name}"


class _WriteBatch:
    """Collects a response's writes so its head and body leave in one send() syscall."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)

    def flush(self) -> None:
        if self.parts:
            data = b"".join(self.parts)
            self.parts.clear()
            self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()


class EdgeCycle(RequestResponseCycle):
    """One request: uvicorn's cycle, with body errors raised from ``receive``, JSON
    error answers, and the response head held back to go out with the first body part."""

    body_error: RequestBodyError | None = None  # set by the protocol; raised by receive()
    _start: Any = None  # a response head waiting for its body

    async def receive(self) -> ASGIReceiveEvent:
        if self._failed():
            raise self.body_error  # type: ignore[misc]
        message = await super().receive()
        if self._failed() and message["type"] == "http.request" and not message["body"]:
            raise self.body_error  # type: ignore[misc]
        return message

    def _failed(self) -> bool:
        # Body bytes that arrived before the failure are handed over first.
        return (
            self.body_error is not None
            and self.more_body
            and not self.body
            and not self.disconnected
            and not self.response_complete
        )

    async def send(self, message: Any) -> None:
        if message["type"] == "http.response.start" and not self.response_started:
            self._start = message
            return
        start, self._start = self._start, None
        if start is None:
            await super().send(message)
            return
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            body = message.get("body", b"")
            head = self._whole_head(start, len(body))
            if head is not None:
                await self._send_whole(head + body)
                return
        real = self.transport
        batch = _WriteBatch(real)
        respond = self.on_response

        def flushed_then_respond() -> None:
            # Before the protocol moves on (next pipelined request, closing): bytes first.
            batch.flush()
            respond()

        self.transport = batch  # type: ignore[assignment]
        self.on_response = flushed_then_respond
        try:
            await super().send(start)
            await super().send(message)
        finally:
            self.transport = real
            if self.on_response is flushed_then_respond:
                self.on_response = respond
            batch.flush()

    def _whole_head(self, start: Any, length: int) -> bytes | None:
        """The head of a response whose whole body is known, built as uvicorn builds
        it (default headers first, names lower-cased, the same checks); None when the
        response needs more than this (HEAD, chunked, a Content-Length that is not the
        body's, an access log): then uvicorn's own ``send`` writes it."""
        if self.access_log or self.scope["method"] == "HEAD":
            return None
        content = [STATUS_LINE[start["status"]]]
        close = False
        length_seen = False
        for name, value in (*self.default_headers, *start.get("headers", ())):
            if HEADER_RE.search(name) or HEADER_VALUE_RE.search(value):
                return None  # uvicorn's send raises for these
            name = name.lower()
            if name == b"content-length":
                if length_seen or value != b"%d" % length:
                    return None
                length_seen = True
            elif name == b"transfer-encoding":
                return None
            elif name == b"connection":
                close = close or b"close" in [t.lower().strip() for t in value.split(b",")]
            content.extend((name, b": ", value, b"\r\n"))
        if not length_seen:
            return None
        if close:
            self.keep_alive = False
        elif not self.keep_alive:
            content.append(b"connection: close\r\n")
        content.append(b"\r\n")
        return b"".join(content)

    async def _send_whole(self, data: bytes) -> None:
        # uvicorn's send for the head and then the last body part, in one write.
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        self.response_started = True
        self.waiting_for_100_continue = False
        self.chunked_encoding = False
        self.expected_content_length = 0
        self.transport.write(data)
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()

    async def run_asgi(self, app: ASGI3Application) -> None:
        # The last guard: our applications answer every client behaviour themselves, so
        # reaching here is a bug; answer JSON, log where, never a traceback with text.
        try:
            result = await app(self.scope, self.receive, self.send)  # type: ignore[func-returns-value]
        except BaseException as exc:  # uvicorn's own guard catches the same
            if isinstance(exc, RequestBodyError):
                await self._answer(exc.status, exc.code, exc.detail)
            elif isinstance(exc, asyncio.CancelledError):  # shutdown past its grace period
                await self._answer(503, "shutting_down", "the receiver is stopping; retry")
                raise
            else:
                log.error("asgi_app_failed", error=type(exc).__name__, where=where(exc))
                await self._answer(500, "internal_error", "internal error")
        else:
            if result is not None or (not self.response_complete and self.response_started):
                self.transport.close()
            elif not self.response_started and not self.disconnected:
                log.error("asgi_app_gave_no_response")
                await self._answer(500, "internal_error", "internal error")
        finally:
            self.on_response = lambda: None

    async def _answer(self, status: int, code: str, detail: str) -> None:
        if self.response_started or self.disconnected:
            self.transport.close()
            return
        body = f'{{"error":"{code}","detail":"{detail}"}}'.encode()
        await self.send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await self.send({"type": "http.response.body", "body": body, "more_body": False})
