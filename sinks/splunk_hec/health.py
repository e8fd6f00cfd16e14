"""``SplunkHecSink.health()``: HEC's health endpoint, the token, and with ack the acks.

Only what Splunk documents is asked: ``GET /services/collector/health`` (17 when
healthy; 18-20 when busy or unhealthy), an event post with no data (HEC checks the
token, then answers 5 "No data"), and with indexer ack an ack query for the ackIds
still pending (or, with none pending, for the channel's next ackId, which no request
holds yet, so the answer can only be false and consumes nothing). Never the undocumented
empty query ``{"acks": []}``.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import httpx

from sinks.base import SinkError, SinkHealth
from sinks.splunk_hec._client import classify, parse_reply, transport_error

if TYPE_CHECKING:
    from sinks.splunk_hec._delivery import Delivery

__all__ = ["check"]


async def check(delivery: Delivery) -> SinkHealth:
    """What a send needs: HEC answers healthy, takes the token (and the channel)."""
    client = delivery.client
    # Before the first send the ack state is not open: a token with indexer ack
    # wants some channel even for the empty post, and a fresh one holds nothing.
    fresh = str(uuid.uuid4())
    channel = delivery.channel or (fresh if delivery.config.ack else None)
    try:
        response = await client.get_health()
        reply = parse_reply(response.content)
        if response.status_code != 200 or reply.code not in {None, 17}:
            return SinkHealth(ok=False, detail=classify(response.status_code, reply).reason)
        response = await client.post_nothing(channel)
        reply = parse_reply(response.content)
        if reply.code != 5:
            verdict = classify(response.status_code, reply)
            return SinkHealth(ok=False, detail=f"token check: {verdict.reason}")
        await delivery.probe_acks(fresh)
    except httpx.HTTPError as exc:
        return SinkHealth(ok=False, detail=str(transport_error(exc)))
    except SinkError as exc:
        return SinkHealth(ok=False, detail=str(exc))
    return SinkHealth(ok=True)
