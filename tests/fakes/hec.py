"""A Splunk HTTP Event Collector emulator (Starlette), following Splunk's published protocol.

What it does, as Splunk documents HEC:

- ``POST /services/collector/event`` (also ``/services/collector`` and ``.../event/1.0``):
  ``Authorization: Splunk <token>``; a body of concatenated JSON event objects, gzip
  when ``Content-Encoding: gzip``; a body over ``max_content_length`` -> HTTP 413.
  Events are checked in order; at the first bad one HEC answers its code with
  ``invalid-event-number`` and keeps the events before it (they are indexed), not that
  one nor any after it.
- every answer is ``{"text", "code"}`` with the code's HTTP status (``CODES``).
- tokens with indexer acknowledgement need a channel (``X-Splunk-Request-Channel`` or
  ``?channel=``, a GUID); each accepted request gets an ``ackId`` counting up from 0
  per channel; ``POST /services/collector/ack`` ``{"acks": [ids]}`` answers
  ``{"acks": {"id": bool}}``: true once the request is indexed, and only once (after
  that the id is unknown: false). What Splunk answers to an empty ``acks`` list is not
  documented, so the emulator refuses it (code 6): a client relying on it fails here.
- only the codes Splunk documents (0-22, ``CODES``) are answered; a test may inject an
  answer with any other code (``inject_answers``) to see how a client treats it.
- ``GET /services/collector/health``: 17 / 200, 18 / 503 while busy, 21 or 22 / 400 for
  a bad token when one is sent.

Faults a test can inject: busy (code 9), any code for the next requests, a disabled or
unknown token, poison events (by event id, or the event at index k of the next
request), slow acks, paused acks, lost acks (the data never gets indexed), a restart
that forgets every channel, and slow answers.

It records what it indexed (``indexed``) and every request (``requests``). Run it in a
thread (``HecEmulator.start()``) or as a process: ``python -m tests.fakes.hec --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from sinks.base import Event
from tests.fakes._hec_protocol import (
    CODES,
    TOKEN,
    Channel,
    Indexed,
    Pending,
    Reject,
    RequestRecord,
    Token,
    hec_answer,
)
from tests.fakes._server import ThreadedServer


class HecEmulator:
    """The emulator's state, its Starlette app, and a uvicorn server to run it."""

    def __init__(
        self,
        *,
        token: str = TOKEN,
        ack: bool = False,
        max_content_length: int = 10 * 1024 * 1024,
        default_index: str = "main",
        record_requests: bool = True,
    ) -> None:
        self.tokens: dict[str, Token] = {token: Token(token, ack=ack)}
        self.max_content_length = max_content_length
        self.default_index = default_index
        self.record_requests = record_requests
        # faults
        self.busy = False
        # Codes answered to the next event posts, in order; None lets one through.
        self.inject: deque[int | None] = deque()
        # (code, HTTP status) answered to the next event posts, for codes not in CODES.
        self.inject_answers: deque[tuple[int, int]] = deque()
        self.poison_ids: dict[str, int] = {}  # event_id -> code, whenever it shows up
        self.poison_at: tuple[int, int] | None = None  # (k, code) for the next event post
        self.report_invalid_event = True  # False: a rejection does not say which event
        self.keep_prefix = True  # False: a rejected batch keeps none of its events
        self.ack_delay = 0.0
        self.acks_paused = False
        self.lose_acks = 0  # the next N acked requests are lost (never indexed)
        self.answer_delay = 0.0
        # records
        self.indexed: list[Indexed] = []
        self.requests: list[RequestRecord] = []
        self.indexed_count = 0
        self._channels: dict[str, Channel] = {}
        self._lock = threading.Lock()
        self.port = 0
        self.scheme = "http"
        self.app = Starlette(
            routes=[
                Route("/services/collector", self._event, methods=["POST"]),
                Route("/services/collector/event", self._event, methods=["POST"]),
                Route("/services/collector/event/1.0", self._event, methods=["POST"]),
                Route("/services/collector/ack", self._ack, methods=["POST"]),
                Route("/services/collector/health", self._health, methods=["GET"]),
                Route("/services/collector/health/1.0", self._health, methods=["GET"]),
                Route("/_emulator/stats", self._stats, methods=["GET"]),
            ]
        )
        self._server = ThreadedServer(self.app, "hec-emulator")

    # -- test controls ---------------------------------------------------------------

    def token(self, value: str = TOKEN) -> Token:
        return self.tokens[value]

    def release_acks(self) -> None:
        """Paused acks: every pending request is indexed now."""
        with self._lock:
            self.acks_paused = False
            now = time.monotonic()
            for ch in self._channels.values():
                for p in ch.pending.values():
                    if p.ready_at is None:
                        p.ready_at = now
            self._tick()

    def restart(self) -> None:
        """Forget every channel, as a Splunk restart does; unindexed data is lost."""
        with self._lock:
            self._channels.clear()

    def snapshot(self) -> list[Indexed]:
        with self._lock:
            self._tick()
            return list(self.indexed)

    def event_ids(self) -> list[str | None]:
        return [e.event_id for e in self.snapshot()]

    def pending_acks(self) -> int:
        with self._lock:
            self._tick()
            return sum(
                1 for ch in self._channels.values() for p in ch.pending.values() if not p.lost
            )

    def event_posts(self) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith("/services/collector/event")]

    # -- protocol ----------------------------------------------------------------------

    def _tick(self) -> None:
        """Move requests whose indexing time has come into the index (lock held)."""
        now = time.monotonic()
        for ch in self._channels.values():
            for ack_id, p in list(ch.pending.items()):
                if p.lost or p.ready_at is None or p.ready_at > now:
                    continue
                self._store(p.events)
                ch.ready.add(ack_id)
                del ch.pending[ack_id]

    def _store(self, events: list[Indexed]) -> None:
        if self.record_requests:
            self.indexed.extend(events)
        self.indexed_count += len(events)

    def _log(self, record: RequestRecord) -> None:
        if self.record_requests:
            self.requests.append(record)

    def _auth(self, request: Request) -> Token:
        header = request.headers.get("authorization")
        if header is None:
            raise Reject(2)
        scheme, _, value = header.partition(" ")
        if scheme != "Splunk" or not value:
            raise Reject(3)
        token = self.tokens.get(value)
        if token is None:
            raise Reject(4)
        if not token.enabled:
            raise Reject(1)
        return token

    @staticmethod
    def _channel(request: Request, token: Token) -> str | None:
        channel = request.headers.get("x-splunk-request-channel") or request.query_params.get(
            "channel"
        )
        if channel is None:
            if token.ack:
                raise Reject(10)
            return None
        try:
            uuid.UUID(channel)
        except ValueError:
            raise Reject(11) from None
        return channel

    async def _body(self, request: Request) -> bytes:
        raw = await request.body()
        if request.headers.get("content-encoding", "").lower() == "gzip":
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError, zlib.error):
                raise Reject(6, 0) from None
        return raw

    def _parse(self, raw: bytes, token: Token, channel: str | None) -> list[Indexed]:
        """Concatenated JSON objects -> events; a bad one ends the batch (Reject)."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Reject(6, 0) from None
        decoder = json.JSONDecoder()
        events: list[Indexed] = []
        pos = 0
        poison_at, self.poison_at = self.poison_at, None
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos >= len(text):
                break
            k = len(events)
            try:
                obj, pos = decoder.raw_decode(text, pos)
            except ValueError:
                raise Reject(6, k, events) from None
            if poison_at is not None and poison_at[0] == k:
                raise Reject(poison_at[1], k, events)
            try:
                events.append(self._check(obj, token, channel))
            except Reject as exc:
                raise Reject(exc.code, k, events) from None
        if not events:
            raise Reject(5)
        return events

    def _check(self, obj: Any, token: Token, channel: str | None) -> Indexed:
        if not isinstance(obj, dict):
            raise Reject(6)
        if "event" not in obj:
            raise Reject(12)
        if obj["event"] in ("", None):
            raise Reject(13)
        fields = obj.get("fields", {})
        if not isinstance(fields, dict) or not all(
            isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))
            for v in fields.values()
        ):
            raise Reject(15)
        t = obj.get("time")
        if t is not None and not isinstance(t, (int, float)):
            try:
                float(t)
            except (TypeError, ValueError):
                raise Reject(6) from None
        index = obj.get("index", self.default_index)
        if not isinstance(index, str) or (token.indexes is not None and index not in token.indexes):
            raise Reject(7)
        item = Indexed(
            event=obj["event"],
            time=t,
            index=index,
            sourcetype=obj.get("sourcetype"),
            source=obj.get("source"),
            host=obj.get("host"),
            fields=fields,
            channel=channel,
            ack_id=None,
        )
        if item.event_id is not None and item.event_id in self.poison_ids:
            raise Reject(self.poison_ids[item.event_id])
        return item

    # -- endpoints -----------------------------------------------------------------------

    async def _event(self, request: Request) -> Response:
        if self.answer_delay:
            await asyncio.sleep(self.answer_delay)
        length = int(request.headers.get("content-length", "0") or 0)
        if length > self.max_content_length:
            self._log(RequestRecord(request.url.path, 413, None, 0, None))
            return PlainTextResponse(
                f"Content-Length of {length} too large (maximum is {self.max_content_length})",
                status_code=413,
            )
        channel: str | None = None
        if self.inject_answers:
            code, status = self.inject_answers.popleft()
            self._log(RequestRecord(request.url.path, status, code, 0, None))
            return JSONResponse({"text": "Injected", "code": code}, status_code=status)
        try:
            token = self._auth(request)
            injected = self.inject.popleft() if self.inject else None
            if injected is not None:
                raise Reject(injected)
            if self.busy:
                raise Reject(9)
            channel = self._channel(request, token)
            raw = await self._body(request)
            with self._lock:
                events = self._parse(raw, token, channel)
                return self._accept(request, token, channel, events)
        except Reject as exc:
            return self._refuse(request, exc, channel)

    def _accept(
        self, request: Request, token: Token, channel: str | None, events: list[Indexed]
    ) -> Response:
        zipped = request.headers.get("content-encoding", "").lower() == "gzip"
        if not token.ack or channel is None:
            self._store(events)
            self._log(RequestRecord(request.url.path, 200, 0, len(events), channel, gzip=zipped))
            return hec_answer(0)
        ch = self._channels.setdefault(channel, Channel())
        ack_id = ch.next_id
        ch.next_id += 1
        stamped = [_with_ack(e, ack_id) for e in events]
        lost = self.lose_acks > 0
        self.lose_acks -= int(lost)
        ready = None if self.acks_paused else time.monotonic() + self.ack_delay
        ch.pending[ack_id] = Pending(stamped, ready, lost)
        self._tick()
        self._log(
            RequestRecord(request.url.path, 200, 0, len(events), channel, ack_id, gzip=zipped)
        )
        return hec_answer(0, ackId=ack_id)

    def _refuse(self, request: Request, exc: Reject, channel: str | None) -> Response:
        if exc.taken and self.keep_prefix:
            with self._lock:
                self._store(exc.taken)  # HEC keeps the events ahead of the bad one
        extra: dict[str, Any] = {}
        if exc.invalid_event is not None and self.report_invalid_event:
            extra["invalid-event-number"] = exc.invalid_event
        self._log(RequestRecord(request.url.path, CODES[exc.code][1], exc.code, 0, channel))
        return hec_answer(exc.code, **extra)

    async def _ack(self, request: Request) -> Response:
        channel: str | None = None
        try:
            token = self._auth(request)
            if not token.ack:
                raise Reject(14)
            channel = self._channel(request, token)
            try:
                asked = json.loads(await request.body())["acks"]
                ids = [int(a) for a in asked if not isinstance(a, bool)]
            except (ValueError, KeyError, TypeError):
                raise Reject(6) from None
            if not ids:  # undocumented: refused, see the module docstring
                raise Reject(6)
        except Reject as exc:
            return self._refuse(request, exc, channel)
        with self._lock:
            self._tick()
            ch = self._channels.get(channel or "", Channel())
            answer = {}
            for ack_id in ids:
                answer[str(ack_id)] = ack_id in ch.ready
                ch.ready.discard(ack_id)  # true once, then false
            self._log(RequestRecord(request.url.path, 200, None, 0, channel, None, tuple(ids)))
        return JSONResponse({"acks": answer})

    async def _health(self, request: Request) -> Response:
        if request.headers.get("authorization") is not None:  # a token is checked when sent
            try:
                self._auth(request)
            except Reject as exc:
                return hec_answer(22 if exc.code == 1 else 21)
        return hec_answer(18) if self.busy else hec_answer(17)

    async def _stats(self, request: Request) -> Response:
        with self._lock:
            self._tick()
            return JSONResponse({"indexed": self.indexed_count})

    # -- running -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self, *, certfile: str | None = None, keyfile: str | None = None) -> HecEmulator:
        self.scheme = "https" if certfile else "http"
        self.port = self._server.start(ssl_certfile=certfile, ssl_keyfile=keyfile)
        return self

    def stop(self) -> None:
        self._server.stop()


_CATEGORY = {"decision_event": "decision", "rule": "rule", "approval": "approval"}


def make_event(
    seq: int,
    event_type: str = "decision_event.created",
    *,
    occurred_at: str | None = "2026-11-24T08:00:00.123+00:00",
    received_at: float = 1_795_500_000.0,
    **payload: Any,
) -> Event:
    """A stored event as the dispatcher hands it to a sink; id ``evt-<seq>``."""
    body = {"event_id": f"evt-{seq}", "event_type": event_type, **payload}
    return Event(
        seq=seq,
        event_id=f"evt-{seq}",
        id_origin="body.event_id",
        event_type=event_type,
        category=_CATEGORY.get(event_type.split(".", 1)[0], "other"),
        occurred_at=occurred_at,
        received_at=received_at,
        source="bighub",
        delivery_id=f"dlv-{seq}",
        body=json.dumps(body, separators=(",", ":")).encode(),
    )


def _with_ack(event: Indexed, ack_id: int) -> Indexed:
    return Indexed(
        event.event,
        event.time,
        event.index,
        event.sourcetype,
        event.source,
        event.host,
        event.fields,
        event.channel,
        ack_id,
    )


@pytest.fixture
def hec() -> Iterator[HecEmulator]:
    """A running emulator, token ``TOKEN`` without indexer ack."""
    emulator = HecEmulator().start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def hec_ack() -> Iterator[HecEmulator]:
    """A running emulator whose token ``TOKEN`` has indexer ack on."""
    emulator = HecEmulator(ack=True).start()
    try:
        yield emulator
    finally:
        emulator.stop()


def main() -> None:  # pragma: no cover - used by the benchmark
    parser = argparse.ArgumentParser(description="Run the HEC emulator.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", default=TOKEN)
    parser.add_argument("--ack", action="store_true")
    args = parser.parse_args()
    emulator = HecEmulator(token=args.token, ack=args.ack, record_requests=False)
    uvicorn.run(
        emulator.app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        ws="none",
    )


if __name__ == "__main__":  # pragma: no cover
    main()
