"""Property tests on the endpoint (in-process ASGI): hostile input never stores or crashes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver import signatures
from receiver.app import create_app
from receiver.errors import StoreError
from receiver.service import Service
from receiver.settings import load_settings
from receiver.store import IngestResult, NewEvent, SQLiteStore
from receiver.webhook import Webhook
from tests.harness import SECRET, base_config, event_body, signed_headers


class Harness:
    def __init__(self, tmp: Path, store: Any | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        cfg = base_config(tmp)
        cfg["ingress"]["max_body_bytes"] = 4096
        self.service = Service(load_settings(data=cfg), store=store)
        self.loop.run_until_complete(self.service.start())
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(self.service, manage_service=False)),
            base_url="http://test",
        )

    def post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        # Latin-1 bytes: what a hostile client can put on the wire, beyond ASCII.
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        return self.loop.run_until_complete(
            self.client.post("/webhooks/bighub", content=body, headers=raw)
        )

    def held(self) -> int:
        return self.loop.run_until_complete(self.service.store.stats()).events_held

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.run_until_complete(self.service.stop())
        self.loop.close()


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    h = Harness(tmp_path_factory.mktemp("props"))
    yield h
    h.close()


header_text = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=255, blacklist_characters="\x7f"),
    max_size=200,
)
content_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/plain", "", "application/xml"]
)


def assert_json_error(resp: httpx.Response) -> None:
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text)
    data = resp.json()
    assert set(data) == {"error", "detail"}
    assert SECRET not in resp.text


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.binary(max_size=6000),
    ctype=content_types,
    sig=st.one_of(st.none(), header_text),
    ts=st.one_of(st.none(), header_text, st.integers(0, 2**40).map(str)),
)
def test_unsigned_garbage_is_refused(
    harness: Harness, body: bytes, ctype: str, sig: str | None, ts: str | None
) -> None:
    """Arbitrary bytes and headers get a 4xx JSON error and nothing is stored."""
    before = harness.held()
    headers = {"Content-Type": ctype}
    if sig is not None:
        headers["X-BIGHUB-Signature"] = sig
    if ts is not None:
        headers["X-BIGHUB-Timestamp"] = ts
    assert_json_error(harness.post(body, headers))
    assert harness.held() == before


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        st.binary(max_size=3000),
        st.text(max_size=500).map(str.encode),
        st.builds(
            lambda i, t: event_body(i, t),
            st.text(min_size=1, max_size=30),
            st.text(min_size=1, max_size=30),
        ),
    )
)
def test_signed_bodies_never_crash(harness: Harness, body: bytes) -> None:
    """Correctly signed arbitrary bodies get 202/200, or a 400 JSON error with nothing stored."""
    before = harness.held()
    resp = harness.post(body, signed_headers(body))
    if resp.status_code in (200, 202):
        assert resp.json()["status"] in {"accepted", "duplicate"}
        assert harness.held() == before + (resp.status_code == 202)
    else:
        assert_json_error(resp)
        assert harness.held() == before


class BrokenStore(SQLiteStore):
    async def ingest(
        self, event: NewEvent, *, alive: Callable[[], bool] | None = None
    ) -> IngestResult:
        raise StoreError("disk gone")


def test_store_unavailable_is_503(tmp_path: Path) -> None:
    """503 store_unavailable with Retry-After when the store cannot write."""
    h = Harness(tmp_path, store=BrokenStore(tmp_path / "spool.db"))
    try:
        body = event_body("evt-broken")
        resp = h.post(body, signed_headers(body))
        assert resp.status_code == 503
        assert resp.json()["error"] == "store_unavailable"
        assert resp.headers["retry-after"] == "30"
        assert h.held() == 0
    finally:
        h.close()


def test_concurrent_requests_share_commits(tmp_path: Path) -> None:
    """Many concurrent requests are all stored, in fewer commits than requests."""
    h = Harness(tmp_path)
    store = h.service.store
    assert isinstance(store, SQLiteStore)
    commits = 0
    original = store._commit

    def counting(items):  # type: ignore[no-untyped-def]
        nonlocal commits
        commits += 1
        return original(items)

    store._commit = counting  # type: ignore[method-assign]
    try:

        async def burst() -> list[int]:
            async def one(i: int) -> int:
                body = event_body(f"evt-burst-{i}")
                r = await h.client.post(
                    "/webhooks/bighub", content=body, headers=signed_headers(body)
                )
                return r.status_code

            return list(await asyncio.gather(*(one(i) for i in range(200))))

        codes = h.loop.run_until_complete(burst())
        assert codes == [202] * 200
        assert h.held() == 200
        assert commits < 200
    finally:
        h.close()


def test_timestamp_uses_injected_clock(tmp_path: Path) -> None:
    """Tolerance is judged against the service clock, not the wall clock."""
    cfg = base_config(tmp_path)
    service = Service(load_settings(data=cfg), clock=lambda: time.time() + 3600)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(service.start())
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(service, manage_service=False)),
        base_url="http://t",
    )
    try:
        body = event_body("evt-clock")
        resp = loop.run_until_complete(
            client.post("/webhooks/bighub", content=body, headers=signed_headers(body))
        )
        assert resp.json()["error"] == "timestamp_out_of_tolerance"
        ts = int(time.time()) + 3600
        headers = {
            "Content-Type": "application/json",
            "X-BIGHUB-Timestamp": str(ts),
            "X-BIGHUB-Signature": signatures.signature_header(SECRET, ts, body),
        }
        resp = loop.run_until_complete(
            client.post("/webhooks/bighub", content=body, headers=headers)
        )
        assert resp.status_code == 202
    finally:
        loop.run_until_complete(client.aclose())
        loop.run_until_complete(service.stop())
        loop.close()


class BuggyStore(SQLiteStore):
    async def ingest(self, event: NewEvent) -> IngestResult:
        raise KeyError("a bug of ours, not the sender's")


def test_an_internal_failure_after_a_verified_signature_is_503(tmp_path: Path) -> None:
    """Once the signature verified, our own bug answers 503 + Retry-After (BIGHUB retries),
    never a 4xx that tells it to drop the event; unsigned requests still get 401."""
    h = Harness(tmp_path, store=BuggyStore(tmp_path / "spool.db"))
    try:
        body = event_body("evt-buggy")
        resp = h.post(body, signed_headers(body))
        assert resp.status_code == 503
        assert resp.json() == {
            "error": "internal_error",
            "detail": "the event could not be processed; retry later",
        }
        assert resp.headers["retry-after"] == "30"
        assert h.post(body, {"Content-Type": "application/json"}).status_code == 401
    finally:
        h.close()


def test_signature_headers_are_checked_before_the_body_is_read(tmp_path: Path) -> None:
    """Missing, malformed or stale signature headers are refused without one receive()."""
    cfg = base_config(tmp_path)
    service = Service(load_settings(data=cfg))
    webhook = Webhook(service)
    stale = str(int(time.time()) - 3600)
    cases = [
        [],
        [(b"x-bighub-signature", b"v1=" + b"0" * 64)],
        [(b"x-bighub-timestamp", stale.encode()), (b"x-bighub-signature", b"v1=" + b"0" * 64)],
        [(b"x-bighub-timestamp", b"nope"), (b"x-bighub-signature", b"v1=" + b"0" * 64)],
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body was read")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    for extra in cases:
        sent.clear()
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/webhooks/bighub",
            "headers": [(b"content-type", b"application/json"), *extra],
        }
        asyncio.run(webhook(scope, receive, send))
        assert sent[0]["status"] == 401
        assert (b"connection", b"close") in sent[0]["headers"]
