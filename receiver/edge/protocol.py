"""uvicorn's httptools protocol with the edge limits enforced as bytes arrive.

A connection is always in one phase, and each phase has one deadline (one timer):

    new / keep-alive idle  no byte of a request yet: closed after the header timeout
                           (new) or the keep-alive timeout (between requests)
    headers                bytes counted against max_header_bytes before the parser sees
                           them, fields against max_header_count: 431; deadline 408
    body                   bytes counted against what a body within max_body_bytes can
                           take on the wire (chunk framing and trailers included); the body
                           timeout from the end of the headers. Past either, or on broken
                           framing, the application's ``receive`` raises a
                           ``RequestBodyError`` (413 / 408 / 400) and it answers itself
    busy                   the application has the whole request: no edge deadline

Refusals write a complete JSON answer, half-close, and drain what the client still
sends for a short while before closing: closing a socket with unread data makes the
kernel send a reset that can destroy the answer before the client reads it.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from receiver.edge.answers import Answers
from receiver.edge.cycle import EdgeCycle
from receiver.edge.registry import BUSY, CLOSING, IDLE, READING, Edge
from receiver.errors import (
    BodyTimeoutError,
    BodyTooLargeError,
    MalformedBodyError,
    RequestBodyError,
)

__all__ = ["EdgeProtocol", "protocol_for"]

_BETWEEN, _HEADERS, _BODY = 0, 1, 2  # where the parser is in the request stream
_LINGER_SECONDS = 1.0  # how long a refused connection drains before it is closed


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; the reason is on the protocol."""


class EdgeProtocol(HttpToolsProtocol):
    """Bound to one listener's ``Edge`` by ``protocol_for``."""

    edge: ClassVar[Edge]
    answers: ClassVar[Answers]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = self.edge.limits
        self._parsing = _BETWEEN
        self._requests = 0  # requests begun on this connection
        self._room = 0  # bytes the current phase may still pass to the parser
        # On the wire, a body within max_body_bytes is at most this long: chunk framing
        # (a client sending tiny chunks pays with its own budget) and trailers included.
        self._body_wire = 2 * self._limits.max_body_bytes + self._limits.max_header_bytes
        self._header_count = 0
        self._phase_start = 0.0  # loop time the current request (or idleness) began
        self._fresh = True  # no byte received yet
        self._tier = IDLE
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # when the pending timer fires
        self._deadline_at: float | None = None  # when the current phase's deadline is
        self._refusal = "bad_request"
        self._closed = False

    # -- connection -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._phase_start = self.loop.time()
        if not self.edge.admit(self):
            # At the cap with nothing to take: answer at once, never leave it hanging.
            self._closed = True
            self._linger(self.answers.connection_limit, register=False)
            return
        self._sync()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._disarm()
        self.edge.forget(self)
        super().connection_lost(exc)

    def evict(self) -> None:
        self._closed = True
        self._disarm()
        self.transport.close()

    def _unset_keepalive_if_required(self) -> None:
        self._disarm()  # uvicorn's keep-alive timer is replaced by the phase timer

    # -- bytes in ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return  # refused or failed: drained and dropped
        if self._parsing == _BETWEEN:
            self._begin()
        while self._parsing != _BETWEEN and len(data) > self._room:
            # Only what fits the phase's byte budget reaches the parser (which would
            # otherwise keep growing a header line or a trailer in memory).
            head, data = data[: self._room], data[self._room :]
            begun, phase = self._requests, self._parsing
            if not self._feed(head):
                return
            if self._parsing == phase and self._requests == begun:
                if phase == _HEADERS:
                    self._refuse("header_too_large")
                else:
                    self._fail_body(BodyTooLargeError())
                return
        if self._parsing != _BETWEEN:
            self._room -= len(data)
        if self._feed(data):
            self._sync()

    def _feed(self, data: bytes) -> bool:
        """Parse; False when the connection was refused (or closed) meanwhile."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no upgrades are offered; the request was answered as plain HTTP
        except httptools.HttpParserError:
            if self._parsing == _BODY:
                self._fail_body(MalformedBodyError())
            else:
                self._refuse(self._refusal)
        return not self._closed

    def _begin(self) -> None:
        self._parsing = _HEADERS
        self._requests += 1
        self._room = self._limits.max_header_bytes
        self._header_count = 0
        self._phase_start = self.loop.time()
        self._fresh = False

    # -- parser callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._parsing == _BETWEEN:  # a pipelined request in the same read
            self._begin()
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self._limits.max_header_count:
            self._refusal = "too_many_headers"
            raise _Refused
        # uvicorn's on_header, inline: called once per header of every request.
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._parsing = _BODY
        self._room = self._body_wire
        self._phase_start = self.loop.time()
        if len(self.pipeline) >= self._limits.max_pipelined:
            self._refusal = "pipeline_overflow"
            raise _Refused
        http_version = self.parser.get_http_version()
        self.scope["method"] = self.parser.get_method().decode("ascii")
        if http_version != "1.1":
            self.scope["http_version"] = http_version
        parsed_url = httptools.parse_url(self.url)
        raw_path = parsed_url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            from urllib.parse import unquote

            path = unquote(path)
        self.scope["path"] = self.root_path + path
        self.scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        self.scope["query_string"] = parsed_url.query or b""
        existing = self.cycle
        self.cycle = EdgeCycle(
            scope=self.scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=self.expect_100_continue,
            keep_alive=http_version != "1.0" and self.parser.should_keep_alive(),
            on_response=self.on_response_complete,
        )
        if existing is None or existing.response_complete:
            self._start_asgi_task(self.cycle, self.app)
        else:  # pipelined: queued until the one before it is answered
            self.flow.pause_reading()
            self.pipeline.appendleft((self.cycle, self.app))

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._parsing = _BETWEEN

    def on_response_complete(self) -> None:
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        if self._closed:  # answered after a body failure: the stream is not trusted
            self.transport.close()
            return
        if self.cycle.more_body:
            # Answered before its body arrived (401, 413, ...): the rest of the body is
            # not read, so nothing after it can be trusted as the next request.
            self._close()
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        self._sync()

    # -- deadlines and tiers ----------------------------------------------------------------

    def _sync(self) -> None:
        """Put the connection in its tier and arm its phase's deadline."""
        deadline: float | None
        if self._parsing == _HEADERS:
            tier, deadline = READING, self._phase_start + self._limits.header_timeout
        elif self._parsing == _BODY:
            tier = BUSY
            failed = self.cycle is not None and self.cycle.body_error is not None  # type: ignore[attr-defined]
            deadline = None if failed else self._phase_start + self._limits.body_timeout
        elif self.pipeline or (self.cycle is not None and not self.cycle.response_complete):
            tier, deadline = BUSY, None
        else:
            tier = IDLE
            if self._tier != IDLE:
                self._phase_start = self.loop.time()
            wait = self._limits.header_timeout if self._fresh else self._limits.keepalive_timeout
            deadline = self._phase_start + wait
        if tier != self._tier:
            self._tier = tier
            self.edge.move(self, tier)
        # One timer per connection, re-armed lazily: a deadline that moves later (the
        # keep-alive deadline after every answer) leaves the pending timer alone, which
        # re-arms itself when it fires early. Steady keep-alive traffic arms no timers.
        self._deadline_at = deadline
        if deadline is not None and (self._timer is None or self._timer_at > deadline):
            self._arm(deadline)

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.loop.call_at(deadline, self._deadline)

    def _disarm(self) -> None:
        self._deadline_at = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _deadline(self) -> None:
        self._timer = None
        if self._closed or self.transport.is_closing() or self._deadline_at is None:
            return
        if self._deadline_at > self.loop.time():
            self._arm(self._deadline_at)  # the deadline moved on since this was armed
            return
        if self._parsing == _HEADERS:
            self._refuse("header_timeout")
        elif self._parsing == _BODY:
            self._fail_body(BodyTimeoutError())
        else:
            self.edge.shed("idle_timeout")
            self._close()

    # -- refusing ---------------------------------------------------------------------

    def _fail_body(self, error: RequestBodyError) -> None:
        """The body cannot be read to its end: no more bytes are parsed, and the
        application, which owns the request now, is told through ``receive()`` and
        answers itself, so the request's one line and count stay its own."""
        cycle: EdgeCycle = self.cycle  # type: ignore[assignment]
        self._closed = True  # the stream cannot be trusted past this point
        self._disarm()
        if cycle.response_complete:  # already answered (say 401): nothing to tell
            self.edge.forget(self)
            self.transport.close()
            return
        self.flow.pause_reading()
        cycle.body_error = error
        cycle.message_event.set()

    def _refuse(self, reason: str) -> None:
        status = {"header_too_large": 431, "too_many_headers": 431, "header_timeout": 408}
        client = self.client[0] if self.client else None
        seconds = self.loop.time() - self._phase_start
        self.edge.refused(reason, status.get(reason, 400), client, seconds)
        answer = getattr(self.answers, reason, None)
        answering = self.cycle is not None and not self.cycle.response_complete
        if answer is None or answering:
            # pipeline_overflow, or an earlier request's answer is being written: our
            # bytes would interleave with it, so the connection just closes.
            self._close()
            return
        self._closed = True
        self._disarm()
        self._linger(answer, register=True)

    def _linger(self, answer: bytes, *, register: bool) -> None:
        self.transport.write(answer)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        if register:
            self._tier = CLOSING
            self.edge.move(self, CLOSING)
        self.loop.call_later(_LINGER_SECONDS, self.transport.close)

    def _close(self) -> None:
        self._closed = True
        self._disarm()
        self.edge.forget(self)
        self.transport.close()


def protocol_for(edge: Edge) -> type[EdgeProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to ``edge``."""
    return type(
        f"EdgeProtocol_{edge.name}",
        (EdgeProtocol,),
        {"edge": edge, "answers": Answers.build(edge.limits)},
    )
