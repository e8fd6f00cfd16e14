"""The edge protocol in-process, bytes in and bytes out, over a recording transport.

The transport is the seam (asyncio's interface); the protocol, uvicorn's parser and the
registry are the real ones. Properties: the header limit is exact however the bytes are
split, and no byte stream makes ``data_received`` raise or leak a connection.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from uvicorn.config import Config
from uvicorn.server import ServerState

from receiver.edge import Edge, EdgeLimits, protocol_for
from receiver.edge.protocol import EdgeProtocol
from receiver.metrics import Metrics

LIMIT = 1024


class RecordingTransport(asyncio.Transport):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.written = b""
        self.closing = False
        self.eof = False
        self.protocol: EdgeProtocol | None = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 80)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.eof
        self.written += bytes(data)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            assert self.protocol is not None
            self.loop.call_soon(self.protocol.connection_lost, None)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        more = message.get("more_body", False)
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


class Rig:
    def __init__(self, **limits: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.edge = Edge("test", EdgeLimits(**{"max_header_bytes": LIMIT, **limits}), Metrics())
        self.config = Config(app, ws="none", lifespan="off", log_config=None, proxy_headers=False)
        self.config.load()
        self.state = ServerState()
        self.cls = protocol_for(self.edge)

    def connect(self) -> tuple[EdgeProtocol, RecordingTransport]:
        async def made() -> tuple[EdgeProtocol, RecordingTransport]:  # as the loop does it
            proto = self.cls(
                config=self.config, server_state=self.state, app_state={}, _loop=self.loop
            )
            transport = RecordingTransport(self.loop)
            transport.protocol = proto
            proto.connection_made(transport)
            return proto, transport

        return self.loop.run_until_complete(made())

    def settle(self) -> None:
        async def turns() -> None:
            for _ in range(8):
                await asyncio.sleep(0)

        self.loop.run_until_complete(turns())

    def close(self) -> None:
        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.loop.run_until_complete(drain())
        self.loop.close()


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


def request_with_head_of(size: int) -> bytes:
    """A GET whose request line + headers + blank line are exactly ``size`` bytes."""
    start = b"GET /x HTTP/1.1\r\nHost: x\r\nX-Pad: "
    end = b"\r\n\r\n"
    return start + b"a" * (size - len(start) - len(end)) + end


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(100, 3 * LIMIT),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
)
def test_the_header_limit_is_exact_however_the_bytes_are_split(
    rig: Rig, size: int, cuts: list[int]
) -> None:
    """431 exactly when request line + headers exceed the limit; 200 otherwise."""
    proto, transport = rig.connect()
    for chunk in split(request_with_head_of(size), cuts):
        proto.data_received(chunk)
    rig.settle()
    if size > LIMIT:
        assert transport.written.startswith(b"HTTP/1.1 431 ")
        assert transport.eof
    else:
        assert transport.written.startswith(b"HTTP/1.1 200 ")
    transport.close()
    rig.settle()
    assert rig.edge.open == 0


@settings(max_examples=500, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=4000),
        st.builds(
            lambda head, tail: head + tail,
            st.sampled_from([b"POST / HTTP/1.1\r\n", b"GET /x HTTP/1.0\r\nA: b\r\n", b""]),
            st.binary(max_size=3000),
        ),
    ),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
)
def test_no_byte_stream_raises_or_leaks(rig: Rig, data: bytes, cuts: list[int]) -> None:
    """Arbitrary bytes: no exception, any answer is a complete status line, and the
    connection leaves the registry when it closes."""
    proto, transport = rig.connect()
    for chunk in split(data, cuts):
        proto.data_received(chunk)
    rig.settle()
    if transport.written:
        assert transport.written[:9] == b"HTTP/1.1 "
        assert int(transport.written[9:12]) in {200, 400, 431}
    transport.close()
    rig.settle()
    assert rig.edge.open == 0


def test_too_many_pipelined_requests_close_the_connection() -> None:
    """More requests queued behind the one in progress than the limit: closed, counted."""
    rig = Rig(max_pipelined=4)
    try:
        proto, transport = rig.connect()
        proto.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n" * 10)
        rig.settle()
        assert transport.closing
        assert rig.edge.open == 0
    finally:
        rig.close()


def test_eviction_takes_the_longest_idle_first_then_the_oldest_header_reader() -> None:
    """At the cap a new connection closes the longest idle one; when every other one is
    still sending headers, the oldest of those; requests in progress are never taken."""
    rig = Rig(max_connections=3)
    try:
        (a, ta), (_, tb), (c, tc) = (rig.connect() for _ in range(3))
        a.data_received(b"GET / HTTP/1.1\r\n")  # a header reader
        d, td = rig.connect()
        assert tb.closing  # b was idle: taken first, although a is older
        assert not ta.closing
        c.data_received(b"GET / HTTP/1.1\r\n")
        d.data_received(b"GET / HTTP/1.1\r\n")
        rig.connect()
        assert ta.closing  # the oldest header reader
        assert not tc.closing
        assert not td.closing
        c.data_received(b"Host: x\r\nContent-Length: 5\r\n\r\nab")  # body in progress
        d.data_received(b"Host: x\r\nContent-Length: 5\r\n\r\nab")
        rig.settle()
        _, tf = rig.connect()  # only the newest idle one could go
        assert not tc.closing
        assert not td.closing
        _, tg = rig.connect()
        assert tf.closing
        assert not tg.closing
        rig.settle()
        assert rig.edge.open == 3
    finally:
        rig.close()


@settings(max_examples=200, deadline=None)
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=300), max_size=30),
    trailer=st.integers(0, 5000),
    cuts=st.lists(st.integers(0, 100_000), max_size=8),
)
def test_chunked_bodies_within_the_wire_budget_or_413(
    chunks: list[bytes], trailer: int, cuts: list[int]
) -> None:
    """A chunked body is read if its wire form (framing and trailers included) fits
    2 x max_body_bytes + max_header_bytes; past that budget plus one header budget (body
    bytes that share a read with the headers are not charged) the application answers
    413 and no more bytes are parsed."""
    rig = Rig(max_body_bytes=1024)
    try:
        proto, transport = rig.connect()
        body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
        body += b"0\r\n" + (b"X-T: " + b"t" * trailer + b"\r\n" if trailer else b"") + b"\r\n"
        head = b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        for part in split(head + body, cuts):
            proto.data_received(part)
        rig.settle()
        budget = 2 * 1024 + LIMIT
        if len(body) <= budget:
            assert transport.written.startswith(b"HTTP/1.1 200 "), transport.written
        elif len(body) > budget + LIMIT:
            assert transport.written.startswith(b"HTTP/1.1 413 "), transport.written
            assert b'"error":"body_too_large"' in transport.written
            assert transport.closing
    finally:
        rig.close()


def test_broken_chunk_framing_is_answered_by_the_application() -> None:
    """A chunk size that is not hex: the application's receive() raises, it answers 400."""
    rig = Rig()
    try:
        proto, transport = rig.connect()
        proto.data_received(b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        proto.data_received(b"zz\r\n")
        rig.settle()
        assert transport.written.startswith(b"HTTP/1.1 400 ")
        assert b'"error":"bad_request"' in transport.written
        assert transport.closing
    finally:
        rig.close()
