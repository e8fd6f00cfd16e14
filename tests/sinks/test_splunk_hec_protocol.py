"""The HEC answer mapping: one test per HEC code, per HTTP status class, per httpx error."""

from __future__ import annotations

import json
import ssl

import httpx
import pytest

from sinks.base import RetryableSinkError, SinkUnavailableError
from sinks.splunk_hec._client import (
    CODES,
    Action,
    Reply,
    classify,
    parse_reply,
    transport_error,
)
from tests.fakes import hec as emulator

EXPECTED: dict[int, Action] = {
    0: Action.DELIVERED,
    1: Action.HOLD,
    2: Action.HOLD,
    3: Action.HOLD,
    4: Action.HOLD,
    5: Action.RETRY,
    6: Action.REJECT_EVENT,
    7: Action.HOLD,
    8: Action.RETRY,
    9: Action.BUSY,
    10: Action.HOLD,
    11: Action.HOLD,
    12: Action.REJECT_EVENT,
    13: Action.REJECT_EVENT,
    14: Action.HOLD,
    15: Action.REJECT_EVENT,
    16: Action.HOLD,
    17: Action.DELIVERED,
    18: Action.BUSY,
    19: Action.BUSY,
    20: Action.BUSY,
    21: Action.HOLD,
    22: Action.HOLD,
}


def test_code_table_is_splunks_documented_table() -> None:
    """The sink and the emulator know exactly Splunk's documented codes 0-22."""
    assert CODES == emulator.CODES
    assert set(CODES) == set(range(23))


@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_each_hec_code_maps_to_its_action(code: int) -> None:
    """Every HEC code, with the HTTP status Splunk sends it with, gets the issue's action."""
    text, status = CODES[code]
    verdict = classify(status, Reply(code=code, text=text, invalid_event=3))
    assert verdict.action is EXPECTED[code]
    assert f"code {code}" in verdict.reason
    if verdict.action is Action.REJECT_EVENT:
        assert verdict.invalid_event == 3


@pytest.mark.parametrize("code", [1, 2, 3, 4, 7, 10, 11, 14, 16, 21, 22])
def test_hold_reasons_tell_the_operator_what_to_fix(code: int) -> None:
    """A hold names the fix (token, index, channel, ack) for /readyz and the logs."""
    reason = classify(CODES[code][1], Reply(code=code)).reason
    assert any(word in reason for word in ("token", "index", "ack", "channel", "authorization"))


def test_invalid_event_without_a_number_still_rejects() -> None:
    """6/12/13/15 without invalid-event-number leave the position unknown (the sink bisects)."""
    verdict = classify(400, Reply(code=6))
    assert verdict.action is Action.REJECT_EVENT
    assert verdict.invalid_event is None


@pytest.mark.parametrize(
    ("status", "body", "action"),
    [
        (413, b"Content-Length of 2000000 too large (maximum is 1000000)", Action.SPLIT),
        (413, b'{"text":"Server is busy","code":9}', Action.SPLIT),
        (500, b"<html>oops</html>", Action.RETRY),
        (502, b"", Action.RETRY),
        (503, b"", Action.BUSY),
        (504, b"gateway timeout", Action.RETRY),
        (429, b"", Action.BUSY),
        (408, b"", Action.RETRY),
        (401, b"", Action.HOLD),
        (403, b"<html>forbidden</html>", Action.HOLD),
        (404, b"not found", Action.HOLD),
        (400, b'{"text":"Mystery","code":99}', Action.HOLD),
        (301, b"", Action.HOLD),
        (200, b"<html>welcome</html>", Action.HOLD),
        (200, b'{"text":"Success","code":0}', Action.DELIVERED),
        (200, b'{"text":"Success","code":0,"ackId":4}', Action.DELIVERED),
        # codes Splunk does not document: by the HTTP status they come with
        (200, b'{"text":"Queue nearly full","code":24}', Action.DELIVERED),
        (503, b'{"text":"Shutting down","code":23}', Action.BUSY),
        (429, b'{"text":"Queue at capacity","code":26}', Action.BUSY),
        (500, b'{"text":"Mystery","code":99}', Action.RETRY),
    ],
)
def test_http_statuses_without_a_known_code(status: int, body: bytes, action: Action) -> None:
    """413 splits, 503/429 are busy, other 5xx/408 retry, other answers (a 2xx that is not
    HEC's too) hold; an undocumented code is treated by its HTTP status."""
    assert classify(status, parse_reply(body)).action is action


def test_parse_reply_reads_hec_fields_and_tolerates_junk() -> None:
    """ackId and invalid-event-number are read; non-JSON or odd types give an empty reply."""
    reply = parse_reply(b'{"text":"Invalid data format","code":6,"invalid-event-number":2}')
    assert reply == Reply(code=6, text="Invalid data format", invalid_event=2)
    assert parse_reply(b'{"code":0,"ackId":7}').ack_id == 7
    assert parse_reply(b"not json") == Reply()
    assert parse_reply(b"[1,2]") == Reply()
    assert parse_reply(b'{"code":"6","ackId":true}') == Reply()
    assert parse_reply(b"\xff\xfe") == Reply()


def test_splunk_text_is_cut_and_made_printable() -> None:
    """HEC's text goes to logs and /readyz: bounded and without control characters."""
    reply = parse_reply(json.dumps({"code": 8, "text": "a\nb" + "x" * 500}).encode())
    assert "\n" not in reply.text
    assert len(reply.text) == 200


REQUEST = httpx.Request("POST", "https://hec.example:8088/services/collector/event")


def _tls_failure() -> httpx.ConnectError:
    try:
        raise ssl.SSLCertVerificationError("certificate verify failed")
    except ssl.SSLCertVerificationError:
        try:
            raise httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED]", request=REQUEST)
        except httpx.ConnectError as exc:
            return exc


@pytest.mark.parametrize(
    ("exc", "expected", "words"),
    [
        (httpx.ConnectError("refused", request=REQUEST), SinkUnavailableError, "connect"),
        (_tls_failure(), SinkUnavailableError, "ca_bundle"),
        (httpx.ConnectTimeout("slow", request=REQUEST), SinkUnavailableError, "connect"),
        (httpx.UnsupportedProtocol("ftp", request=REQUEST), SinkUnavailableError, "url"),
        (httpx.ProxyError("proxy", request=REQUEST), SinkUnavailableError, "proxy"),
        (httpx.ReadTimeout("slow", request=REQUEST), RetryableSinkError, "ReadTimeout"),
        (httpx.WriteTimeout("slow", request=REQUEST), RetryableSinkError, "WriteTimeout"),
        (httpx.PoolTimeout("full", request=REQUEST), RetryableSinkError, "PoolTimeout"),
        (httpx.ReadError("reset", request=REQUEST), RetryableSinkError, "ReadError"),
        (httpx.WriteError("broken", request=REQUEST), RetryableSinkError, "WriteError"),
        (httpx.RemoteProtocolError("bad", request=REQUEST), RetryableSinkError, "Protocol"),
        (httpx.LocalProtocolError("bad", request=REQUEST), RetryableSinkError, "Protocol"),
        (httpx.DecodingError("bad gzip", request=REQUEST), RetryableSinkError, "Decoding"),
        (httpx.TooManyRedirects("loop", request=REQUEST), RetryableSinkError, "Redirects"),
    ],
)
def test_each_httpx_error_maps_to_a_sink_error(
    exc: httpx.HTTPError, expected: type[Exception], words: str
) -> None:
    """Refused / TLS / no route hold without charging; errors after connecting retry."""
    mapped = transport_error(exc)
    assert type(mapped) is expected
    assert words in str(mapped)
