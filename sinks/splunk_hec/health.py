"""``SplunkHecSink.health()``: HEC's health endpoint, then a token check that sends no event."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

from sinks.base import SinkError, SinkHealth
from sinks.splunk_hec._client import HecClient, classify, parse_reply, transport_error

__all__ = ["check"]


async def check(
    client: HecClient,
    channel: str | None,
    ack_query: Callable[[], Awaitable[object]] | None = None,
) -> SinkHealth:
    """What a send needs: HEC answers healthy and takes the token (and, with ack, the channel)."""
    try:
        response = await client.get_health()
        reply = parse_reply(response.content)
        if response.status_code != 200 or reply.code not in {None, 17}:
            return SinkHealth(ok=False, detail=classify(response.status_code, reply).reason)
        # An empty post: HEC checks the token, then answers 5 "No data".
        response = await client.post_nothing(channel)
        reply = parse_reply(response.content)
        if reply.code != 5:
            verdict = classify(response.status_code, reply)
            return SinkHealth(ok=False, detail=f"token check: {verdict.reason}")
        if ack_query is not None:
            await ack_query()
    except httpx.HTTPError as exc:
        return SinkHealth(ok=False, detail=str(transport_error(exc)))
    except SinkError as exc:
        return SinkHealth(ok=False, detail=str(exc))
    return SinkHealth(ok=True)
