"""The numbers the edge enforces, read once from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from receiver.settings import IngressSettings

__all__ = ["EdgeLimits"]

# Requests a client may queue behind the one being answered (HTTP/1.1 pipelining). Real
# senders never pipeline POSTs; past this the connection is closed, so one read of tiny
# pipelined requests cannot make us hold thousands of parsed requests.
MAX_PIPELINED = 16


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    """One listener's limits; see ``IngressSettings`` for each field's meaning."""

    max_header_bytes: int = 16 * 1024
    max_header_count: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive_timeout: float = 65.0
    max_connections: int = 256
    max_body_bytes: int = 1024 * 1024
    max_pipelined: int = MAX_PIPELINED

    @classmethod
    def from_settings(
        cls, ingress: IngressSettings, *, max_connections: int | None = None
    ) -> EdgeLimits:
        """The ingress limits; the admin listener passes its own connection cap."""
        return cls(
            max_header_bytes=ingress.max_header_bytes,
            max_header_count=ingress.max_header_count,
            header_timeout=ingress.header_timeout_seconds,
            body_timeout=ingress.body_timeout_seconds,
            keepalive_timeout=ingress.keepalive_timeout_seconds,
            max_connections=(
                ingress.max_connections if max_connections is None else max_connections
            ),
            max_body_bytes=ingress.max_body_bytes,
        )
