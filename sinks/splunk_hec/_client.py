"""httpx and HEC's answers: the only module that talks to HEC, and its error map.

``HecClient`` posts event batches, queries acks and reads the health endpoint;
``classify`` and ``transport_error`` are the one place where HEC's answers and
httpx's exceptions become the sink errors of ``sinks.base``.

Splunk documents a numeric ``code`` with every HEC answer (``{"text": ..., "code": N}``)
and, for a batch with a bad event, ``invalid-event-number``: the position of the first
event it rejected. Events before that position were taken; that one and every later
one were not. ``classify`` maps (HTTP status, HEC code) to an ``Action``;
``transport_error`` maps httpx's exceptions to the sink error tree.

    Action          codes / statuses                         the sink
    DELIVERED       0 (or a code this table does not know)   counts the events as taken
                    with a 2xx
    RETRY           5, 8; HTTP 5xx other than 503, 408;      RetryableSinkError (backoff,
                    network errors after connecting          attempt charged)
    BUSY            9, 18, 19, 20; HTTP 503, 429             SinkUnavailableError: an outage,
                                                             events wait uncharged
    SPLIT           HTTP 413                                 halves resent in the same send()
    REJECT_EVENT    6, 12, 13, 15                            the event at invalid-event-number
                                                             is dead-lettered, the rest resent;
                                                             without a number: bisect
    HOLD            1-4, 7, 10, 11, 14, 16, 21, 22, other    SinkUnavailableError: nothing is
                    4xx / 3xx, a 2xx that is not HEC,        charged or dropped, the sink shows
                    connection refused, TLS failure          unhealthy with the reason

Only the codes Splunk documents (0-22) are named; any other code is treated by the HTTP
status it came with.
"""

from __future__ import annotations

import asyncio
import enum
import json
import ssl
from dataclasses import dataclass

import httpx

from sinks.base import PermanentSinkError, RetryableSinkError, SinkError, SinkUnavailableError
from sinks.splunk_hec.config import SplunkHecConfig
from sinks.splunk_hec.encoder import gzip_body

__all__ = [
    "ACK_PATH",
    "CODES",
    "EVENT_PATH",
    "HEALTH_PATH",
    "Action",
    "HecClient",
    "Reply",
    "Verdict",
    "classify",
    "parse_reply",
    "transport_error",
]

EVENT_PATH = "/services/collector/event"
ACK_PATH = "/services/collector/ack"
HEALTH_PATH = "/services/collector/health"
CHANNEL_HEADER = "X-Splunk-Request-Channel"

# Splunk's documented HEC status codes: code -> (text, HTTP status).
CODES: dict[int, tuple[str, int]] = {
    0: ("Success", 200),
    1: ("Token disabled", 403),
    2: ("Token is required", 401),
    3: ("Invalid authorization", 401),
    4: ("Invalid token", 403),
    5: ("No data", 400),
    6: ("Invalid data format", 400),
    7: ("Incorrect index", 400),
    8: ("Internal server error", 500),
    9: ("Server is busy", 503),
    10: ("Data channel is missing", 400),
    11: ("Invalid data channel", 400),
    12: ("Event field is required", 400),
    13: ("Event field cannot be blank", 400),
    14: ("ACK is disabled", 400),
    15: ("Error in handling indexed fields", 400),
    16: ("Query string authorization is not enabled", 400),
    17: ("HEC is healthy", 200),
    18: ("HEC is unhealthy, queues are full", 503),
    19: ("HEC is unhealthy, ack service unavailable", 503),
    20: ("HEC is unhealthy, queues are full, ack service unavailable", 503),
    21: ("Invalid token", 400),
    22: ("Token disabled", 400),
}

_OK_CODES = frozenset({0, 17})
_RETRY_CODES = frozenset({5, 8})
# Busy or unhealthy: an outage like an unreachable server. Charging attempts would
# dead-letter a backlog within about an hour of a busy indexer.
_BUSY_CODES = frozenset({9, 18, 19, 20})
_BUSY_STATUSES = frozenset({429, 503})
_EVENT_CODES = frozenset({6, 12, 13, 15})
# What an operator must fix. Nothing is dropped meanwhile.
_HOLD_HINTS: dict[int, str] = {
    1: "the HEC token is disabled in Splunk; enable it or configure another token",
    2: "HEC got no token; check the sink's token setting",
    3: "HEC could not read the Authorization header; check the token value",
    4: "HEC does not know this token; check the token setting",
    7: "the token may not write to the configured index; add the index to the token "
    "or change index / categories",
    10: "the token has indexer acknowledgement on, so HEC wants a channel; set ack = true",
    11: "HEC rejected the ack channel; remove the ack state file to start a new channel",
    14: "indexer acknowledgement is off for this token; enable it or set ack = false",
    16: "HEC refused query-string authorization",
    21: "HEC does not know this token; check the token setting",
    22: "the HEC token is disabled in Splunk; enable it or configure another token",
}


class Action(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    BUSY = "busy"
    SPLIT = "split"
    REJECT_EVENT = "reject_event"
    HOLD = "hold"


@dataclass(frozen=True, slots=True)
class Reply:
    """A HEC answer body, read tolerantly; ``code`` is ``None`` when it is not HEC's JSON."""

    code: int | None = None
    text: str = ""
    invalid_event: int | None = None
    ack_id: int | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    reason: str
    invalid_event: int | None = None


def _int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _safe_text(text: str) -> str:
    # Splunk's own message, cut short and printable: it goes to logs and /readyz.
    return "".join(c if c.isprintable() else " " for c in text[:200])


def parse_reply(body: bytes) -> Reply:
    """Read ``{"text", "code", "invalid-event-number", "ackId"}``; anything else is empty."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return Reply()
    if not isinstance(obj, dict):
        return Reply()
    text = obj.get("text")
    return Reply(
        code=_int(obj.get("code")),
        text=_safe_text(text) if isinstance(text, str) else "",
        invalid_event=_int(obj.get("invalid-event-number")),
        ack_id=_int(obj.get("ackId")),
    )


def _describe(status: int, reply: Reply) -> str:
    if reply.code is None:
        return f"HTTP {status}"
    text = reply.text or CODES.get(reply.code, ("unknown code", 0))[0]
    return f"HEC code {reply.code} ({text}), HTTP {status}"


def classify(status: int, reply: Reply) -> Verdict:
    """What to do with HEC's answer to a request. The single mapping of HEC codes."""
    what = _describe(status, reply)
    code = reply.code
    if status == 413:
        return Verdict(Action.SPLIT, f"{what}: request larger than HEC's max_content_length")
    if code in _HOLD_HINTS:
        return Verdict(Action.HOLD, f"{what}: {_HOLD_HINTS[code]}")
    if code in _EVENT_CODES:
        return Verdict(Action.REJECT_EVENT, what, reply.invalid_event)
    if code in _BUSY_CODES:
        return Verdict(Action.BUSY, f"{what}: HEC is busy or unhealthy; events wait")
    if code in _RETRY_CODES:
        return Verdict(Action.RETRY, what)
    # Success, a code Splunk does not document, or no HEC answer at all: by HTTP status.
    if 200 <= status < 300:
        if code is not None:
            return Verdict(Action.DELIVERED, what)
        # A 2xx that is not HEC's JSON may be a proxy or another web server:
        # counting it as delivered could lose events without a trace.
        return Verdict(
            Action.HOLD, f"{what}: not a HEC success answer; check url points at HEC (port 8088)"
        )
    if status in _BUSY_STATUSES:
        return Verdict(Action.BUSY, f"{what}: HEC is busy or unhealthy; events wait")
    if status >= 500 or status == 408:
        return Verdict(Action.RETRY, what)
    if status in {401, 403}:
        return Verdict(Action.HOLD, f"{what}: HEC refused the credentials; check the token")
    if 300 <= status < 400:
        # Redirects are not followed: the token would go to another address.
        return Verdict(Action.HOLD, f"{what}: HEC answered with a redirect; set url to its target")
    return Verdict(Action.HOLD, f"{what}: unexpected answer; check url points at HEC")


def transport_error(exc: httpx.HTTPError) -> SinkError:
    """Map an httpx error to the sink error tree (the only place this happens)."""
    name = type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        cause = exc.__context__ or exc.__cause__
        if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(
            exc
        ):
            return SinkUnavailableError(
                "TLS verification of HEC failed; set ca_bundle to the CA that signed its "
                f"certificate ({name})"
            )
        # Nothing reached HEC: it is down or unreachable. Wait without charging attempts.
        return SinkUnavailableError(f"cannot connect to HEC ({name}: {exc})")
    if isinstance(exc, httpx.ConnectTimeout):
        return SinkUnavailableError(f"cannot connect to HEC ({name})")
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.ProxyError)):
        return SinkUnavailableError(f"HEC url or proxy unusable ({name}: {exc})")
    # The request may have reached HEC (timeouts, resets, protocol errors): a resend
    # can duplicate, never lose.
    return RetryableSinkError(f"HEC request failed ({name}: {exc or 'no detail'})")


class HecClient:
    """One httpx client for one HEC endpoint: the token, TLS and timeouts set once.

    Args:
        config: the sink's settings.
        transport: an httpx transport to use instead of the network (tests).

    Raises:
        PermanentSinkError: the CA bundle is unusable.
    """

    def __init__(
        self, config: SplunkHecConfig, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.config = config
        verify: ssl.SSLContext | bool = False
        if config.tls_verify:
            try:
                verify = ssl.create_default_context(
                    cafile=str(config.ca_bundle) if config.ca_bundle else None
                )
            except (OSError, ssl.SSLError) as exc:
                raise PermanentSinkError(f"ca_bundle {config.ca_bundle}: unusable ({exc})") from exc
        self._http = httpx.AsyncClient(
            base_url=config.url,
            headers={
                "Authorization": f"Splunk {config.token.get_secret_value()}",
                "User-Agent": "bighub-siem",
            },
            verify=verify,
            timeout=httpx.Timeout(config.timeout_seconds, connect=config.connect_timeout_seconds),
            follow_redirects=False,  # never hand the token to another address
            transport=transport,
        )
        self._closed = False

    async def aclose(self) -> None:
        self._closed = True
        await self._http.aclose()

    async def post_events(self, body: bytes, channel: str | None) -> httpx.Response:
        """POST a batch body (gzip when configured). Raises ``httpx.HTTPError``."""
        if self._closed:
            raise httpx.ConnectError("sink is closed")
        headers = {"Content-Type": "application/json"}
        if channel is not None:
            headers[CHANNEL_HEADER] = channel
        if self.config.compression == "gzip":
            body = await asyncio.to_thread(gzip_body, body)
            headers["Content-Encoding"] = "gzip"
        return await self._http.post(EVENT_PATH, content=body, headers=headers)

    async def query_acks(self, ack_ids: list[int], channel: str) -> dict[int, bool]:
        """Ask HEC which of ``ack_ids`` are indexed.

        Raises:
            SinkUnavailableError: HEC refuses the query (token, channel, ack off).
            RetryableSinkError: no usable answer this time.
        """
        try:
            response = await self._http.post(
                ACK_PATH,
                params={"channel": channel},
                json={"acks": ack_ids},
                headers={CHANNEL_HEADER: channel},
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc) from exc
        if response.status_code == 200:
            try:
                acks = response.json().get("acks")
            except (ValueError, AttributeError):
                acks = None
            if isinstance(acks, dict):
                return {int(k): v is True for k, v in acks.items() if str(k).isdigit()}
        verdict = classify(response.status_code, parse_reply(response.content))
        if verdict.action in (Action.HOLD, Action.BUSY):
            raise SinkUnavailableError(f"ack query: {verdict.reason}")
        raise RetryableSinkError(f"ack query: {verdict.reason}")

    async def get_health(self) -> httpx.Response:
        """GET the health endpoint (with the token). Raises ``httpx.HTTPError``."""
        return await self._http.get(HEALTH_PATH)

    async def post_nothing(self, channel: str | None) -> httpx.Response:
        """An empty event post: HEC checks the token, then answers 5 "No data"."""
        headers = {CHANNEL_HEADER: channel} if channel is not None else {}
        return await self._http.post(EVENT_PATH, content=b"", headers=headers)
