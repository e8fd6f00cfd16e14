"""What ``health()`` checks, the way a send would: a token, then an empty call per stream.

An empty JSON array ingests nothing, but the endpoint still checks everything a real
call needs: the token, the role assignment on the DCR, that the DCR and the stream
exist. So a missing *Monitoring Metrics Publisher* role shows up here (and in
``check-config --probe``) by name, before an event has to fail on it.
"""

from __future__ import annotations

from collections.abc import Iterable

from sinks.base import SinkError, SinkHealth
from sinks.sentinel._client import IngestionApi
from sinks.sentinel.encoder import body_for

__all__ = ["check", "empty_call", "probe_stream"]


def empty_call(level: int) -> bytes:
    """The gzip body ``[]``."""
    return body_for([], level)


def probe_stream(api: IngestionApi, stream: str, level: int) -> None:
    """Post ``[]`` to ``stream``.

    Raises:
        SinkError: what the endpoint (or Entra ID) said, mapped as for a send.
    """
    api.post(stream, empty_call(level))


def check(api: IngestionApi, streams: Iterable[str], level: int) -> SinkHealth:
    """Token first (its failure names the credential), then each stream once."""
    try:
        api.token()
    except SinkError as exc:
        return SinkHealth(ok=False, detail=str(exc))
    for stream in sorted(set(streams)):
        try:
            probe_stream(api, stream, level)
        except SinkError as exc:
            return SinkHealth(ok=False, detail=f"stream {stream}: {exc}")
    return SinkHealth(ok=True)
