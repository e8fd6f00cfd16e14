"""The HTTP edge: what a client without credentials can make the process hold.

Limits are enforced inside the process, on uvicorn's httptools protocol, as bytes
arrive (docs/ingress.md); a reverse proxy in front is defence in depth, not the
defence. ``Edge`` is one listener's connection table and counters, ``protocol_for``
the protocol class uvicorn runs for it.
"""

from __future__ import annotations

from receiver.edge.cycle import where
from receiver.edge.limits import EdgeLimits
from receiver.edge.protocol import EdgeProtocol, protocol_for
from receiver.edge.registry import REASONS, Edge

__all__ = ["REASONS", "Edge", "EdgeLimits", "EdgeProtocol", "protocol_for", "where"]
