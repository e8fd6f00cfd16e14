"""An S3 endpoint that ignores conditional writes: moto behind a proxy that drops
``If-None-Match``, the way s3rver and older S3 gateways behave (they store the object
and answer 200 instead of 412).

Everything else reaches the real moto server unchanged. moto does not check request
signatures, so removing a signed header does not make it refuse the request.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes._server import ThreadedServer
from tests.services.moto import MotoServer, moto_server

_HOP = frozenset({"host", "if-none-match", "content-length", "transfer-encoding", "connection"})


class UnconditionalS3:
    """Forwards to ``upstream``; ``dropped`` counts the ``If-None-Match`` headers removed."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.dropped = 0
        self.port = 0
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
        self._server = ThreadedServer(self.app, "s3-proxy")

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
        self.port = self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()


@pytest.fixture
def unconditional_s3(moto_server: MotoServer) -> Iterator[UnconditionalS3]:
    """moto behind a proxy that drops ``If-None-Match``."""
    proxy = UnconditionalS3(moto_server.endpoint).start()
    try:
        yield proxy
    finally:
        proxy.stop()
