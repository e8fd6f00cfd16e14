"""A fake BIGHUB control plane that the real ``bighub`` client talks to.

It runs Starlette under uvicorn in a thread on 127.0.0.1 (the client allows plain
http only for localhost). It holds webhooks and their delivery log and behaves the
way the reconciler assumes BIGHUB does:

- ``send(webhook_id, body)`` is BIGHUB emitting an event: a new delivery, POSTed to
  the webhook URL signed like BIGHUB (``X-BIGHUB-Timestamp``, ``X-BIGHUB-Signature:
  v1=...``, ``X-BIGHUB-Delivery-Id``); a refused connection or a non-2xx answer
  leaves the delivery ``failed``.
- ``GET /webhooks/{id}/deliveries?limit=N``: the newest N deliveries, newest first,
  in the shape chosen by ``answer_shape`` / ``event_info``.
- ``POST /webhooks/{id}/deliveries/{delivery_id}/replay``: re-POSTs the same bytes,
  newly signed, under the same delivery id, and answers once that attempt ended;
  404 for an unknown delivery, 409 for one that did not fail.
- every route checks ``X-API-Key`` (or ``Authorization: Bearer``) and answers 401.
- ``inject()`` makes a route answer 429 / 500 (or hang) for the next N requests;
  ``answer_shape`` can make the deliveries answer unreadable.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver import signatures
from tests.harness import SECRET

API_KEY = "bh_test_api_key_0123456789"

Shape = Literal["list", "deliveries", "items", "data", "html", "invalid_json", "no_list", "mixed"]
EventInfo = Literal["event_id", "payload", "payload_text", "none"]
RouteName = Literal["deliveries", "replay"]


@dataclass
class FakeDelivery:
    id: int
    webhook_id: str
    event_type: str
    body: bytes
    created_at: float
    status: str = "pending"  # delivered | failed
    response_status: int | None = None
    error: str | None = None
    attempts: int = 0


@dataclass
class FakeWebhook:
    id: str
    url: str
    secret: str
    deliveries: list[FakeDelivery] = field(default_factory=list)


@dataclass
class _Fault:
    route: RouteName
    status: int  # 0 = hang for `delay` seconds, then answer normally
    remaining: int | None
    delay: float = 0.0


def _signed(secret: str, body: bytes, delivery_id: int) -> dict[str, str]:
    ts = int(time.time())
    return {
        "Content-Type": "application/json",
        "User-Agent": "BIGHUB-Webhooks/fake",
        "X-BIGHUB-Timestamp": str(ts),
        "X-BIGHUB-Signature": signatures.signature_header(secret, ts, body),
        "X-BIGHUB-Delivery-Id": str(delivery_id),
    }


def _outcome(delivery: FakeDelivery, status: int | None, error: str | None) -> None:
    delivery.attempts += 1
    delivery.response_status = status
    delivery.error = error
    ok = status is not None and 200 <= status < 300
    delivery.status = "delivered" if ok else "failed"


class FakeBighub:
    """The fake control plane; ``start()`` it, point the client at ``base_url``."""

    def __init__(self, *, api_key: str = API_KEY, bearer_token: str | None = None) -> None:
        self.api_key = api_key
        self.bearer_token = bearer_token
        self.answer_shape: Shape = "deliveries"
        self.event_info: EventInfo = "event_id"
        self.webhooks: dict[str, FakeWebhook] = {}
        self.replay_requests: list[tuple[str, str]] = []  # (webhook id, delivery id) asked
        self.list_requests = 0
        self.unauthorized = 0
        self._faults: list[_Fault] = []
        self._ids = itertools.count(1001)
        self._lock = threading.Lock()
        # One client for every delivery (building one per request costs ~20 ms of TLS
        # set-up); no keep-alive, so a restarted receiver never meets a stale connection.
        self._http = httpx.Client(timeout=5, limits=httpx.Limits(max_keepalive_connections=0))
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeBighub:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))  # bound before the thread starts: no port race
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app(),
            log_config=None,
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=1,  # a hanging fault must not hold the test's teardown
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake BIGHUB API did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=15)
        self._http.close()

    # -- what tests drive -----------------------------------------------------------

    def add_webhook(self, url: str, secret: str = SECRET) -> str:
        with self._lock:
            wid = f"wh_{len(self.webhooks) + 1}"
            self.webhooks[wid] = FakeWebhook(wid, url, secret)
            return wid

    def send(
        self, webhook_id: str, body: bytes, event_type: str = "decision_event.created"
    ) -> FakeDelivery:
        """BIGHUB emits an event: a new delivery, attempted once now."""
        hook = self.webhooks[webhook_id]
        with self._lock:
            delivery = FakeDelivery(next(self._ids), webhook_id, event_type, body, time.time())
            hook.deliveries.append(delivery)
        status, error = self._post(hook, delivery)
        with self._lock:
            _outcome(delivery, status, error)
        return delivery

    def record(self, webhook_id: str, body: bytes, *, status: str) -> FakeDelivery:
        """A delivery in the log without an attempt now (e.g. one that went through)."""
        with self._lock:
            delivery = FakeDelivery(
                next(self._ids),
                webhook_id,
                "decision_event.created",
                body,
                time.time(),
                status=status,
                attempts=1,
            )
            self.webhooks[webhook_id].deliveries.append(delivery)
            return delivery

    def inject(
        self, route: RouteName, status: int, times: int | None = None, delay: float = 0.0
    ) -> None:
        """Answer ``status`` on ``route`` for the next ``times`` requests (None: until cleared)."""
        with self._lock:
            self._faults.append(_Fault(route, status, times, delay))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def failed(self, webhook_id: str) -> list[FakeDelivery]:
        with self._lock:
            return [d for d in self.webhooks[webhook_id].deliveries if d.status == "failed"]

    # -- delivering -----------------------------------------------------------------

    def _post(self, hook: FakeWebhook, delivery: FakeDelivery) -> tuple[int | None, str | None]:
        try:
            resp = self._http.post(
                hook.url,
                content=delivery.body,
                headers=_signed(hook.secret, delivery.body, delivery.id),
            )
        except httpx.HTTPError as exc:
            return None, type(exc).__name__
        return resp.status_code, None

    # -- the API --------------------------------------------------------------------

    def _authorized(self, request: Request) -> bool:
        key = request.headers.get("x-api-key")
        if key is not None:
            return hmac.compare_digest(key, self.api_key)
        auth = request.headers.get("authorization", "")
        if self.bearer_token and auth.startswith("Bearer "):
            return hmac.compare_digest(auth[7:], self.bearer_token)
        return False

    async def _gate(self, request: Request, route: RouteName) -> Response | None:
        if not self._authorized(request):
            self.unauthorized += 1
            return JSONResponse({"detail": "Invalid API key"}, status_code=401)
        with self._lock:
            fault = next((f for f in self._faults if f.route == route), None)
            if fault is not None and fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
        if fault is None:
            return None
        if fault.status == 0:
            await asyncio.sleep(fault.delay)
            return None
        headers = {"Retry-After": "1"} if fault.status == 429 else None
        detail = {429: "rate limited", 404: "delivery not found"}.get(fault.status, "server error")
        return JSONResponse({"detail": detail}, status_code=fault.status, headers=headers)

    def _entry(self, d: FakeDelivery) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "id": d.id,
            "webhook_id": d.webhook_id,
            "event_type": d.event_type,
            "status": d.status,
            "success": d.status == "delivered",
            "response_status": d.response_status,
            "error": d.error,
            "attempts": d.attempts,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(d.created_at)),
        }
        if self.event_info == "event_id":
            entry["event_id"] = json.loads(d.body).get("event_id")
        elif self.event_info == "payload":
            entry["payload"] = json.loads(d.body)
        elif self.event_info == "payload_text":
            entry["payload"] = d.body.decode()
        return entry

    def _answer(self, entries: list[dict[str, Any]]) -> Response:
        shape = self.answer_shape
        if shape == "html":
            return Response("<html><body>Bad gateway</body></html>", media_type="text/html")
        if shape == "invalid_json":
            return Response('{"deliveries": [{"id": 1,', media_type="application/json")
        if shape == "no_list":
            return JSONResponse({"deliveries": "temporarily unavailable", "count": len(entries)})
        if shape == "mixed":
            return JSONResponse([1, "x", None, {"status": "failed"}, {"id": "../../x"}, *entries])
        if shape == "list":
            return JSONResponse(entries)
        return JSONResponse({shape: entries, "total": len(entries)})

    async def _deliveries(self, request: Request) -> Response:
        self.list_requests += 1
        refused = await self._gate(request, "deliveries")
        if refused is not None:
            return refused
        hook = self.webhooks.get(request.path_params["webhook_id"])
        if hook is None:
            return JSONResponse({"detail": "webhook not found"}, status_code=404)
        try:
            limit = max(1, min(10_000, int(request.query_params.get("limit", "50"))))
        except ValueError:
            return JSONResponse({"detail": [{"msg": "limit must be an integer"}]}, 422)
        with self._lock:
            entries = [self._entry(d) for d in reversed(hook.deliveries)][:limit]
        return self._answer(entries)

    async def _replay(self, request: Request) -> Response:
        refused = await self._gate(request, "replay")
        if refused is not None:
            return refused
        wid, did = request.path_params["webhook_id"], request.path_params["delivery_id"]
        with self._lock:
            self.replay_requests.append((wid, did))
            hook = self.webhooks.get(wid)
            delivery = (
                next((d for d in hook.deliveries if str(d.id) == did), None) if hook else None
            )
        if hook is None or delivery is None:
            return JSONResponse({"detail": "delivery not found"}, status_code=404)
        if delivery.status != "failed":
            return JSONResponse({"detail": "delivery did not fail"}, status_code=409)
        # The shared sync client, off the fake's loop (httpx clients are thread-safe).
        status, error = await asyncio.to_thread(self._post, hook, delivery)
        with self._lock:
            _outcome(delivery, status, error)
        return JSONResponse(
            {"replayed": True, "delivery_id": delivery.id, "status": delivery.status}
        )

    def _app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/webhooks/{webhook_id}/deliveries", self._deliveries, methods=["GET"]),
                Route(
                    "/webhooks/{webhook_id}/deliveries/{delivery_id}/replay",
                    self._replay,
                    methods=["POST"],
                ),
            ]
        )


@pytest.fixture
def bighub_api() -> Iterator[FakeBighub]:
    """A started fake BIGHUB control plane, stopped after the test."""
    fake = FakeBighub().start()
    try:
        yield fake
    finally:
        fake.stop()
