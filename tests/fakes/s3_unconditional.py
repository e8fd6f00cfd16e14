"""An S3 endpoint that ignores conditional writes: moto behind a proxy that drops
``If-None-Match``, the way s3rver and older S3 gateways behave (they store the object
and answer 200 instead of 412).

Everything else reaches the real moto server unchanged. moto does not check request
signatures, so removing a signed header does not make it refuse the request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.harness import free_port
from tests.services.moto import MotoServer, moto_server

_HOP = frozenset({"host", "if-none-match", "content-length", "transfer-encoding", "connection"})


class UnconditionalS3:
    """Forwards to ``upstream``; ``dropped`` counts the ``If-None-Match`` headers removed."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.dropped = 0
        self.port = free_port()
        self._client = httpx.AsyncClient(base_url=upstream, timeout=30)
        self.app = Starlette(
            routes=[
                Route(
                    "/{path:path}",
                    self._forward,
                    methods=["GET", "HEAD", "PUT", "POST", "DELETE"],
                )
            ]
        )
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _forward(self, request: Request) -> Response:
        if "if-none-match" in request.headers:
            self.dropped += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        answer = await self._client.request(
            request.method,
            request.url.path,
            params=request.url.query,
            headers=headers,
            content=await request.body(),
        )
        out = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP}
        out.pop("content-encoding", None)  # httpx has decoded the body already
        return Response(answer.content, status_code=answer.status_code, headers=out)

    def start(self) -> UnconditionalS3:
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="s3-proxy", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the S3 proxy did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = self._thread = None


@pytest.fixture
def unconditional_s3(moto_server: MotoServer) -> Iterator[UnconditionalS3]:
    """moto behind a proxy that drops ``If-None-Match``."""
    proxy = UnconditionalS3(moto_server.endpoint).start()
    try:
        yield proxy
    finally:
        proxy.stop()
