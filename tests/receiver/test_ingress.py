"""Every row of the ingress answers table, against a real server process over HTTP."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from receiver import signatures
from receiver.store import SQLiteStore
from tests.harness import SECRET, ReceiverProcess, base_config, event_body, signed_headers

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReceiverProcess]:
    tmp = tmp_path_factory.mktemp("ingress")
    with ReceiverProcess(tmp, base_config(tmp)) as proc:
        yield proc


def held(server: ReceiverProcess) -> int:
    async def count() -> int:
        store = SQLiteStore(server.tmp / "spool.db")
        await store.open()
        try:
            return (await store.stats()).events_held
        finally:
            await store.close()

    return asyncio.run(count())


def post(server: ReceiverProcess, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(server.url, content=body, headers=headers, timeout=10)


def assert_error(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    data = resp.json()
    assert data["error"] == code
    assert isinstance(data["detail"], str)
    assert data["detail"]
    assert SECRET not in resp.text


def test_new_event_accepted_then_duplicate(server: ReceiverProcess) -> None:
    """202 for a new event (exported once); 200 duplicate for the same id again."""
    body = event_body("evt-accept-1")
    resp = post(server, body, signed_headers(body))
    assert resp.status_code == 202
    assert resp.json() == {"status": "accepted", "event_id": "evt-accept-1"}
    again = post(server, body, signed_headers(body))
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "event_id": "evt-accept-1"}
    exported = [r for r in server.wait_exported(1) if r["event_id"] == "evt-accept-1"]
    time.sleep(0.3)
    exported = [r for r in server.exported() if r["event_id"] == "evt-accept-1"]
    assert len(exported) == 1
    rec = exported[0]
    assert rec["schema_version"] == 1
    assert rec["category"] == "decision"
    assert rec["payload"] == json.loads(body)


def test_charset_parameter_allowed(server: ReceiverProcess) -> None:
    """application/json; charset=utf-8 is accepted."""
    body = event_body("evt-charset")
    headers = {**signed_headers(body), "Content-Type": "Application/JSON; charset=utf-8"}
    assert post(server, body, headers).status_code == 202


def test_declared_body_over_limit(server: ReceiverProcess) -> None:
    """413 when Content-Length says the body is over the limit; nothing stored."""
    before = held(server)
    body = b'{"event_type":"rule.x","pad":"' + b"a" * (1024 * 1024) + b'"}'
    assert_error(post(server, body, signed_headers(body)), 413, "body_too_large")
    assert held(server) == before


def test_streamed_50mb_body_is_not_buffered(server: ReceiverProcess) -> None:
    """A 50 MB chunked body is cut off at the limit: 413, and the server's memory stays flat."""
    assert server.proc is not None
    status_path = Path(f"/proc/{server.proc.pid}/status")

    def rss_kb() -> int:
        for line in status_path.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    before_rss, before = rss_kb(), held(server)
    host, port = server.cfg["ingress"]["host"], server.cfg["ingress"]["port"]
    ts = int(time.time())
    sent = 0
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(
            (
                "POST /webhooks/bighub HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"X-BIGHUB-Timestamp: {ts}\r\nX-BIGHUB-Signature: v1={'0' * 64}\r\n"
                "Transfer-Encoding: chunked\r\n\r\n"
            ).encode()
        )
        chunk = b"a" * 65536
        frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        try:
            while sent < 50 * 1024 * 1024:
                sock.sendall(frame)
                sent += len(chunk)
        except OSError:
            pass  # the server answered and closed: what we want
        sock.settimeout(10)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                part = sock.recv(65536)
                if not part:
                    break
                answer += part
        except OSError:
            pass
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert json.loads(payload)["error"] == "body_too_large"
    assert rss_kb() - before_rss < 20 * 1024, "the body was buffered"
    assert held(server) == before


@pytest.mark.parametrize(
    "ctype", [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx"]
)
def test_not_json_content_type(server: ReceiverProcess, ctype: str | None) -> None:
    """415 for anything but application/json; nothing stored."""
    before = held(server)
    body = event_body(f"evt-ctype-{ctype}")
    headers = signed_headers(body)
    del headers["Content-Type"]
    if ctype:
        headers["Content-Type"] = ctype
    assert_error(post(server, body, headers), 415, "unsupported_media_type")
    assert held(server) == before


@pytest.mark.parametrize(
    "mutate",
    [
        lambda h: h.pop("X-BIGHUB-Signature"),
        lambda h: h.pop("X-BIGHUB-Timestamp"),
        lambda h: h.update({"X-BIGHUB-Signature": "v1=nothex"}),
        lambda h: h.update({"X-BIGHUB-Timestamp": "soon"}),
    ],
)
def test_missing_or_malformed_signature_headers(server: ReceiverProcess, mutate) -> None:  # type: ignore[no-untyped-def]
    """401 missing_or_malformed_signature; nothing stored."""
    before = held(server)
    body = event_body("evt-malformed")
    headers = signed_headers(body)
    mutate(headers)
    assert_error(post(server, body, headers), 401, "missing_or_malformed_signature")
    assert held(server) == before


@pytest.mark.parametrize("skew", [-3600, 3600])
def test_timestamp_outside_tolerance(server: ReceiverProcess, skew: int) -> None:
    """401 with its own code for a stale or future timestamp, even when correctly signed."""
    before = held(server)
    body = event_body("evt-stale")
    headers = signed_headers(body, ts=int(time.time()) + skew)
    assert_error(post(server, body, headers), 401, "timestamp_out_of_tolerance")
    assert held(server) == before


def test_signature_mismatch(server: ReceiverProcess) -> None:
    """401 signature_mismatch for a wrong secret; the expected signature is never echoed."""
    before = held(server)
    body = event_body("evt-mismatch")
    ts = int(time.time())
    resp = post(server, body, signed_headers(body, secret="wrong-secret-0123456789", ts=ts))
    assert_error(resp, 401, "signature_mismatch")
    assert signatures.sign(SECRET, ts, body) not in resp.text
    assert held(server) == before


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"[1,2,3]", "invalid_envelope"),
        (b'"just a string"', "invalid_envelope"),
        (b"{not json", "invalid_json"),
        (b'{"event_id":"x"}', "invalid_event_type"),
    ],
)
def test_bad_body(server: ReceiverProcess, body: bytes, code: str) -> None:
    """400 for a verified body that is not a JSON object with an event type; nothing stored."""
    before = held(server)
    assert_error(post(server, body, signed_headers(body)), 400, code)
    assert held(server) == before


def test_spool_over_quota(tmp_path: Path) -> None:
    """503 spool_full with Retry-After when the spool quota is exceeded; nothing stored."""
    cfg = base_config(
        tmp_path,
        store={
            "url": f"sqlite:///{tmp_path / 'spool.db'}",
            "max_spool_bytes": 1024,
            "retry_after_seconds": 7,
        },
    )
    with ReceiverProcess(tmp_path, cfg) as proc:
        body = event_body("evt-big", pad="x" * 2000)
        resp = post(proc, body, signed_headers(body))
        assert_error(resp, 503, "spool_full")
        assert resp.headers["retry-after"] == "7"
        small = event_body("evt-small")
        assert post(proc, small, signed_headers(small)).status_code == 202
        assert held(proc) == 1


def test_health_and_ready(server: ReceiverProcess) -> None:
    """/healthz answers while alive; /readyz reports the store and each sink."""
    assert httpx.get(f"{server.base_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.base_url}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "store": "writable",
        "sinks": {"console": {"up": True}},
    }
    # Error details are for operators: only the admin listener shows them.
    admin = httpx.get(f"{server.admin_url}/readyz")
    assert admin.json()["sinks"] == {"console": {"up": True, "detail": ""}}


def test_unknown_path_and_method_are_json(server: ReceiverProcess) -> None:
    """404 and 405 answers are JSON errors too."""
    assert_error(httpx.get(server.url), 405, "method_not_allowed")
    assert_error(httpx.post(f"{server.base_url}/nope", content=b"{}"), 404, "not_found")


def test_logs_hold_no_secret_or_signature(server: ReceiverProcess) -> None:
    """The server's log never holds the secret, a signature or a body."""
    body = event_body("evt-log-check", marker="BODY-MARKER-XYZ")
    headers = signed_headers(body)
    assert post(server, body, headers).status_code == 202
    deadline = time.monotonic() + 5
    log = ""
    while "evt-log-check" not in log and time.monotonic() < deadline:
        time.sleep(0.05)  # info lines are flushed every 250 ms
        log = server.stderr_path.read_text()
    assert SECRET not in log
    assert headers["X-BIGHUB-Signature"].split("=", 1)[1] not in log
    assert "BODY-MARKER-XYZ" not in log
    lines = [json.loads(line) for line in log.splitlines()]
    assert any(line["event"] == "webhook" for line in lines)
