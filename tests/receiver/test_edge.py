"""Hostile clients against a real receiver process on loopback (issue 11).

Each attack asserts the answer, the edge metric, the log line, that valid signed events
are accepted meanwhile, and that the receiver's RSS grows by less than 32 MiB. The
limits are set short (1-1.5 s) so the suite stays fast; the defaults are checked in
test_settings.py.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.edge_support import (
    MIB,
    LogTail,
    ValidSender,
    connect,
    in_parallel,
    json_body,
    metric,
    read_one,
    read_response,
    read_responses,
    readable,
    refused,
    rejected,
    rss_growth,
    status_of,
    wait_closed,
)
from tests.harness import ReceiverProcess, base_config, event_body, signed_headers

pytestmark = pytest.mark.integration

LIMITS = {
    "max_header_bytes": 16384,
    "max_header_count": 100,
    "header_timeout_seconds": 1.0,
    "body_timeout_seconds": 1.5,
    "keepalive_timeout_seconds": 1.0,
    "max_connections": 64,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReceiverProcess]:
    tmp = tmp_path_factory.mktemp("edge")
    with ReceiverProcess(tmp, base_config(tmp, ingress=LIMITS)) as proc:
        ValidSender(proc, "warmup").__enter__().__exit__()  # lazy imports, first commit
        yield proc


def signed_head(event_id: str, length: int, *, chunked: bool = False) -> tuple[bytes, bytes]:
    """A request head with a valid signature for a body of ``length`` bytes, and the body."""
    body = event_body(event_id, pad="p" * max(0, length - len(event_body(event_id, pad=""))))
    headers = signed_headers(body)
    lines = [b"POST /webhooks/bighub HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [f"{k}: {v}".encode() for k, v in headers.items()]
    lines.append(
        b"Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}".encode()
    )
    return b"\r\n".join(lines) + b"\r\n\r\n", body


def test_header_bombs_are_cut_at_the_header_limit(server: ReceiverProcess) -> None:
    """Four 32 MiB unterminated header lines: each 431, counted, logged; memory flat."""
    tail = LogTail(server)
    before = refused(server, "header_too_large")

    def bomb(_: int) -> bytes:
        sock = connect(server)
        piece = b"a" * 65536
        sock.sendall(b"POST /webhooks/bighub HTTP/1.1\r\nHost: x\r\nX-Bomb: ")
        sent = 0
        try:
            while sent < 32 * MIB:
                if readable(sock):
                    break  # the server answered: stop sending
                sock.sendall(piece)
                sent += len(piece)
        except OSError:
            pass
        response = read_response(sock)
        sock.close()
        return response

    with rss_growth(server) as growth, ValidSender(server, "during-bomb") as valid:
        answers = in_parallel(bomb, 4)
    assert [status_of(a) for a in answers] == [431] * 4
    assert json_body(answers[0])["error"] == "header_too_large"
    assert refused(server, "header_too_large") - before == 4
    assert len(tail.wait("edge_refused", 4, error="header_too_large", status=431)) == 4
    valid.assert_all_accepted()
    assert growth[0] < 32 * MIB
    tail.assert_no_errors()


def test_too_many_header_fields(server: ReceiverProcess) -> None:
    """101 header fields (each tiny): 431 too_many_headers."""
    tail = LogTail(server)
    before = refused(server, "too_many_headers")
    with connect(server) as sock:
        fields = b"".join(b"X-F%d: 1\r\n" % i for i in range(101))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
        answer = read_response(sock)
        assert status_of(answer) == 431
        assert json_body(answer)["error"] == "too_many_headers"
    assert refused(server, "too_many_headers") - before == 1
    assert tail.wait("edge_refused", 1, error="too_many_headers")
    tail.assert_no_errors()


def test_slowloris_on_headers(server: ReceiverProcess) -> None:
    """40 clients dripping header bytes get 408 at the header timeout; others unaffected."""
    tail = LogTail(server)
    before = refused(server, "header_timeout")

    def drip(_: int) -> tuple[int | None, float]:
        sock = connect(server)
        started = time.monotonic()
        sock.sendall(b"POST /webhooks/bighub HTTP/1.1\r\n")
        try:
            for _ in range(40):  # one byte every 0.2 s: would take 8 s
                if readable(sock, 0.2):
                    break
                sock.sendall(b"X")
        except OSError:
            pass
        answer = read_response(sock)
        sock.close()
        return status_of(answer), time.monotonic() - started

    with rss_growth(server) as growth, ValidSender(server, "during-slow-headers") as valid:
        results = in_parallel(drip, 40)
    assert [status for status, _ in results] == [408] * 40
    assert max(seconds for _, seconds in results) < 3.0
    assert refused(server, "header_timeout") - before == 40
    assert len(tail.wait("edge_refused", 40, error="header_timeout", status=408)) == 40
    valid.assert_all_accepted()
    assert growth[0] < 32 * MIB
    tail.assert_no_errors()


@pytest.mark.parametrize("chunked", [False, True])
def test_slowloris_on_the_body(server: ReceiverProcess, chunked: bool) -> None:
    """Signed headers, then a body dripping in: 408 body_timeout from the webhook."""
    tail = LogTail(server)
    before = rejected(server, "body_timeout")

    def drip(i: int) -> tuple[int | None, float]:
        head, body = signed_head(f"evt-slow-body-{chunked}-{i}", 2000, chunked=chunked)
        sock = connect(server)
        started = time.monotonic()
        sock.sendall(head)
        try:
            for k in range(0, 400, 10):  # 10 bytes every 0.2 s: 2,000 bytes would take 40 s
                if readable(sock, 0.2):
                    break
                piece = body[k : k + 10]
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        except OSError:
            pass
        answer = read_response(sock)
        sock.close()
        return status_of(answer), time.monotonic() - started

    with rss_growth(server) as growth, ValidSender(server, f"during-slow-body-{chunked}") as valid:
        results = in_parallel(drip, 20)
    assert [status for status, _ in results] == [408] * 20
    assert max(seconds for _, seconds in results) < 4.0
    assert rejected(server, "body_timeout") - before == 20
    lines = tail.wait("webhook", 20, error="body_timeout", status=408)
    assert len(lines) == 20
    valid.assert_all_accepted()
    assert growth[0] < 32 * MIB
    tail.assert_no_errors()


def test_two_thousand_idle_sockets_never_lock_out_senders(server: ReceiverProcess) -> None:
    """2,000 sockets that send nothing: the cap (64) evicts the longest idle, the rest time
    out; every one is closed, valid senders are served throughout, a warning is logged."""
    tail = LogTail(server)
    evicted0, idle0 = refused(server, "evicted"), refused(server, "idle_timeout")
    with rss_growth(server) as growth, ValidSender(server, "during-idle", 0.02) as valid:
        socks = [connect(server) for _ in range(2000)]
        open_socks = wait_closed(socks, timeout=10)
        time.sleep(0.2)
    for s in socks:
        s.close()
    assert not open_socks, f"{len(open_socks)} idle sockets were never closed"
    evicted = refused(server, "evicted") - evicted0
    idle = refused(server, "idle_timeout") - idle0
    # Most are evicted at the cap; on a slow machine the first ones may time out first.
    assert evicted + idle >= 2000
    assert evicted >= 1000
    warnings = tail.wait("edge_connection_limit", 1, listener="ingress")
    assert warnings[0]["level"] == "warning"
    assert warnings[0]["max_connections"] == 64
    valid.assert_all_accepted(at_least=10)
    assert growth[0] < 32 * MIB
    assert metric(server, "bighub_siem_connections_open", listener="ingress") <= 2
    tail.assert_no_errors()


def test_clients_leaving_mid_body(server: ReceiverProcess) -> None:
    """50 clients close (half with a reset) mid-body: one line and one count each, no
    traceback, nothing stored."""
    tail = LogTail(server)
    before = rejected(server, "client_disconnect")

    def leave(i: int) -> None:
        head, body = signed_head(f"evt-leaver-{i}", 1000)
        sock = connect(server)
        sock.sendall(head + body[:100])
        time.sleep(0.1)
        if i % 2:  # RST instead of FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    with rss_growth(server) as growth, ValidSender(server, "during-leavers") as valid:
        in_parallel(leave, 50)
        lines = tail.wait("webhook", 50, error="client_disconnect")
    assert len(lines) == 50
    assert all(line["status"] is None for line in lines)
    assert rejected(server, "client_disconnect") - before == 50
    assert not [r for r in server.exported() if r["event_id"].startswith("evt-leaver-")]
    valid.assert_all_accepted()
    assert growth[0] < 32 * MIB
    tail.assert_no_errors()


def test_garbage_is_a_json_400(server: ReceiverProcess) -> None:
    """Bytes that are not HTTP get a JSON 400 (never uvicorn's text/plain), counted."""
    tail = LogTail(server)
    before = refused(server, "bad_request")
    with connect(server) as sock:
        sock.sendall(b"\x16\x03\x01 NOT HTTP AT ALL\r\n\r\n")
        answer = read_response(sock)
        assert status_of(answer) == 400
        assert json_body(answer)["error"] == "bad_request"
    assert refused(server, "bad_request") - before == 1
    assert tail.wait("edge_refused", 1, error="bad_request", status=400)
    tail.assert_no_errors()


@pytest.mark.parametrize(
    "headers",
    [
        b"",  # no signature headers at all
        b"X-BIGHUB-Timestamp: 1000000000\r\nX-BIGHUB-Signature: v1=" + b"0" * 64 + b"\r\n",
        b"X-BIGHUB-Timestamp: 1\r\nX-BIGHUB-Signature: not-a-signature\r\n",
    ],
)
def test_unsigned_bodies_are_refused_before_they_are_read(
    server: ReceiverProcess, headers: bytes
) -> None:
    """A chunked 1 MB body without usable signature headers: 401 after the headers alone,
    no 100 Continue, and the connection closed."""
    with connect(server) as sock:
        sock.sendall(
            b"POST /webhooks/bighub HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n" + headers + b"\r\n"
        )
        answer = read_response(sock, timeout=3)  # not a byte of the body was sent
        assert status_of(answer) == 401
        assert b"100 Continue" not in answer
        assert b"connection: close" in answer.lower()


def test_keep_alive_connections_close_when_idle(server: ReceiverProcess) -> None:
    """After an answer, a keep-alive connection idle past the timeout is closed."""
    before = refused(server, "idle_timeout")
    head, body = signed_head("evt-keepalive-1", 300)
    with connect(server) as sock:
        sock.sendall(head + body)
        assert status_of(read_one(sock)) == 202
        started = time.monotonic()
        assert sock.recv(1) == b""
        assert 0.8 < time.monotonic() - started < 3.0
    assert refused(server, "idle_timeout") - before >= 1


def test_pipelined_requests_are_answered_in_order(server: ReceiverProcess) -> None:
    """Two pipelined webhook posts in one write: two answers, in order."""
    head1, body1 = signed_head("evt-pipe-1", 300)
    head2, body2 = signed_head("evt-pipe-2", 300)
    with connect(server) as sock:
        sock.sendall(head1 + body1 + head2 + body2)
        first, second = read_responses(sock, 2)
    assert status_of(first) == 202
    assert b'"event_id":"evt-pipe-1"' in first
    assert status_of(second) == 202
    assert b'"event_id":"evt-pipe-2"' in second


def test_connection_cap_refuses_at_once_when_every_place_is_busy(tmp_path: Path) -> None:
    """With all 8 places held by requests in progress, a new connection gets a JSON 503
    with Retry-After in well under a second (never a hang); the held requests complete."""
    cfg = base_config(
        tmp_path, ingress={**LIMITS, "max_connections": 8, "body_timeout_seconds": 20}
    )
    with ReceiverProcess(tmp_path, cfg) as server:
        tail = LogTail(server)
        busy = []
        for i in range(8):  # valid signed events whose bodies are half sent: not evictable
            head, body = signed_head(f"evt-held-{i}", 1000)
            sock = connect(server)
            sock.sendall(head + body[:500])
            busy.append((sock, body))
        time.sleep(0.3)
        with rss_growth(server) as growth:
            started = time.monotonic()
            with connect(server) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = read_response(sock, timeout=3)
            assert time.monotonic() - started < 1.0
            refused_by_httpx = httpx.post(
                server.url, content=b"{}", headers=signed_headers(b"{}"), timeout=3
            )
        assert status_of(answer) == 503
        assert json_body(answer)["error"] == "connection_limit"
        assert b"retry-after: 1" in answer.lower()
        assert refused_by_httpx.status_code == 503
        for sock, body in busy:  # the held requests were never disturbed
            sock.sendall(body[500:])
            assert status_of(read_one(sock)) == 202
            sock.close()
        with ValidSender(server, "after-cap") as valid:
            time.sleep(0.3)
        valid.assert_all_accepted()
        assert refused(server, "connection_limit") >= 2
        warning = tail.wait("edge_connection_limit", 1)[0]
        assert (warning["level"], warning["refused"], warning["max_connections"]) == (
            "warning",
            1,
            8,
        )
        assert growth[0] < 32 * MIB
        tail.assert_no_errors()


@pytest.mark.parametrize(
    ("tail_bytes", "status", "code"),
    [
        (b"zz\r\n", 400, "bad_request"),  # not a chunk size
        (b"0\r\nX-Trailer: " + b"t" * 3 * MIB, 413, "body_too_large"),  # a trailer bomb
        (b"1\r\na\r\n" * (MIB // 2), 413, "body_too_large"),  # 1-byte chunks: 6x framing
    ],
)
def test_broken_or_bloated_chunked_bodies(
    server: ReceiverProcess, tail_bytes: bytes, status: int, code: str
) -> None:
    """Bad framing or more wire bytes than a body within the limit needs: the webhook
    answers (one webhook line, one count; no edge line), memory stays flat."""
    tail = LogTail(server)
    before = rejected(server, code)
    head, _ = signed_head("evt-chunky", 300, chunked=True)
    with rss_growth(server) as growth, connect(server) as sock:
        sock.sendall(head)
        try:
            for k in range(0, len(tail_bytes), 65536):
                if readable(sock):
                    break
                sock.sendall(tail_bytes[k : k + 65536])
        except OSError:
            pass
        answer = read_response(sock)
    assert status_of(answer) == status
    assert json_body(answer)["error"] == code
    assert rejected(server, code) - before == 1
    assert tail.wait("webhook", 1, status=status, error=code)
    assert not tail.events("edge_refused")
    assert growth[0] < 32 * MIB
    tail.assert_no_errors()
