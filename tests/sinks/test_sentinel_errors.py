"""The one error map of the Sentinel sink: each Azure SDK error it can meet -> our tree.

HTTP answers are covered end to end against the emulator (test_sentinel_sink.py,
test_sentinel_auth.py); here are the errors no server answer produces, and Retry-After.
"""

from __future__ import annotations

import email.utils

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import CredentialUnavailableError
from hypothesis import given
from hypothesis import strategies as st

from sinks.base import PermanentSinkError, RetryableSinkError, SinkUnavailableError
from sinks.sentinel import SentinelConfig
from sinks.sentinel._client import TokenError, map_error, retry_after_seconds
from tests.fakes.azure import Azure, azure
from tests.sinks.sentinel_support import decisions, run, running

CONFIG = SentinelConfig(
    name="sentinel",
    endpoint="https://dce.westeurope-1.ingest.monitor.azure.com",
    dcr_immutable_id="dcr-" + "0" * 32,
    tenant_id="72f988bf-86f1-41af-91ab-2d7cd011db47",
    client_id="0b5d2f3e-6c1a-4e8b-9f0a-1c2d3e4f5a6b",
    client_secret="literal-secret-for-tests-0123456789",
)


def token_error(cause: BaseException) -> TokenError:
    try:
        raise TokenError(type(cause).__name__) from cause
    except TokenError as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "kind", "words"),
    [
        (ServiceRequestError("connection refused"), SinkUnavailableError, "unreachable"),
        (ServiceResponseError("connection reset"), RetryableSinkError, "may have been ingested"),
        (
            token_error(
                ClientAuthenticationError(
                    "ClientSecretCredential.get_token failed: (invalid_client) AADSTS7000222: "
                    "The provided client secret keys are expired."
                )
            ),
            SinkUnavailableError,
            "invalid_client AADSTS7000222): the client secret has expired",
        ),
        (
            token_error(CredentialUnavailableError("ManagedIdentityCredential: no endpoint")),
            SinkUnavailableError,
            "credential unavailable (client_secret): ManagedIdentityCredential: no endpoint",
        ),
        (
            token_error(ServiceRequestError("dns")),
            SinkUnavailableError,
            "Entra ID (login.microsoftonline.com) unreachable",
        ),
        (ValueError("boom"), RetryableSinkError, "unexpected ValueError"),
        (PermanentSinkError("as is"), PermanentSinkError, "as is"),
    ],
)
def test_each_library_error_maps_to_one_of_ours(
    exc: BaseException, kind: type[Exception], words: str
) -> None:
    """Every error class the SDKs raise becomes exactly one sink error, with a useful text."""
    mapped = map_error(exc, CONFIG)
    assert type(mapped) is kind
    assert words in str(mapped)
    assert "literal-secret" not in str(mapped)


def test_an_unreachable_dce_is_not_charged_but_a_lost_answer_is() -> None:
    """Nothing sent -> unavailable (uncharged); sent without an answer -> retryable (charged)."""
    assert isinstance(map_error(ServiceRequestError("x"), CONFIG), SinkUnavailableError)
    lost = map_error(ServiceResponseError("x"), CONFIG)
    assert isinstance(lost, RetryableSinkError)
    assert not isinstance(lost, SinkUnavailableError)


@pytest.mark.parametrize(("status", "kind"), [(500, RetryableSinkError), (502, RetryableSinkError)])
def test_server_errors_are_retryable_and_charged(
    azure: Azure, status: int, kind: type[Exception]
) -> None:
    """5xx other than 503: a transient failure, charged (it ends as a dead letter if endless)."""
    azure.dce.fail_next(status, "InternalServerError")

    async def go() -> None:
        async with running(azure) as sink:
            with pytest.raises(kind) as info:
                await sink.send(decisions(2))
            assert not isinstance(info.value, SinkUnavailableError)
            assert f"HTTP {status}" in str(info.value)
            await sink.send(decisions(2))

    run(go)


def test_retry_after_forms() -> None:
    """Seconds, milliseconds (Azure's own headers) and HTTP dates; garbage is no value."""
    assert retry_after_seconds({"Retry-After": "7"}) == 7.0
    assert retry_after_seconds({"retry-after-ms": "1500", "Retry-After": "9"}) == 1.5
    assert retry_after_seconds({"x-ms-retry-after-ms": "250"}) == 0.25
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert retry_after_seconds({"Retry-After": date}, now=1_000_000) == pytest.approx(30.0)
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds({"Retry-After": "-5"}) == 0.0
    assert retry_after_seconds({}) is None


@given(st.dictionaries(st.sampled_from(["Retry-After", "retry-after-ms", "x"]), st.text()))
def test_retry_after_never_raises(headers: dict[str, str]) -> None:
    """Whatever a server sends, the parse gives None or a non-negative number of seconds."""
    value = retry_after_seconds(headers)
    assert value is None or value >= 0


@given(st.text(max_size=300))
def test_any_token_error_text_maps_without_raising(text: str) -> None:
    """Whatever azure-identity's message says, the map gives one unavailable error."""
    mapped = map_error(token_error(ClientAuthenticationError(text)), CONFIG)
    assert isinstance(mapped, SinkUnavailableError)
    assert str(mapped).startswith("no token from Entra ID for client id")
