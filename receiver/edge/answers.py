"""Complete HTTP responses the edge writes itself, built once per listener.

Each is JSON like every other answer of the service and closes the connection: after
a refusal the rest of the stream cannot be trusted to start a new request.
"""

from __future__ import annotations

import http
import json
from dataclasses import dataclass

from receiver.edge.limits import EdgeLimits

__all__ = ["Answers", "response_bytes"]


def response_bytes(
    status: int, code: str, detail: str, headers: tuple[tuple[str, str], ...] = ()
) -> bytes:
    body = json.dumps({"error": code, "detail": detail}, separators=(",", ":")).encode()
    head = [
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


@dataclass(frozen=True, slots=True)
class Answers:
    bad_request: bytes
    header_too_large: bytes
    too_many_headers: bytes
    header_timeout: bytes
    connection_limit: bytes
    internal_error: bytes

    @classmethod
    def build(cls, limits: EdgeLimits) -> Answers:
        return cls(
            bad_request=response_bytes(400, "bad_request", "the request is not valid HTTP/1.1"),
            header_too_large=response_bytes(
                431,
                "header_too_large",
                f"the request line and headers are over {limits.max_header_bytes} bytes",
            ),
            too_many_headers=response_bytes(
                431, "too_many_headers", f"more than {limits.max_header_count} header fields"
            ),
            header_timeout=response_bytes(
                408,
                "header_timeout",
                f"the headers did not arrive within {limits.header_timeout:g} s",
            ),
            connection_limit=response_bytes(
                503,
                "connection_limit",
                "too many open connections; retry later",
                (("retry-after", "1"),),
            ),
            internal_error=response_bytes(500, "internal_error", "internal error"),
        )
