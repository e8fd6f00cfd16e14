"""Entra ID credentials of the Sentinel sink against the token service emulator: client
secret, certificate, workload identity and managed identity; token caching, expiry and
refresh; a revoked token; a missing role assignment named; no token or secret in logs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric import rsa

from receiver.log import configure_logging
from receiver.settings import LogSettings
from sinks.base import SinkUnavailableError
from tests.fakes.azure import CLIENT_ID, CLIENT_SECRET, DCR_ID, TENANT_ID, Azure, azure
from tests.fakes.entra import TOKEN_EXCHANGE_AUDIENCE, pem_bundle, rsa_certificate, sign_jwt
from tests.sinks.sentinel_support import assert_ingested_once, decisions, ids, run, running

pytestmark = pytest.mark.integration

ISSUER = "https://oidc.prod-aks.example/cluster-1/"
SUBJECT = "system:serviceaccount:bighub:bighub-siem"


def tokens_used(azure: Azure) -> list[str | None]:
    return [c.token for c in azure.dce.ok_calls() if c.rows]


def test_token_is_cached_while_fresh(azure: Azure) -> None:
    """One token (valid an hour) serves every call: Entra ID is asked once."""

    async def go() -> None:
        async with running(azure) as sink:
            for start in range(0, 10, 2):
                await sink.send(decisions(2, start=start))

    run(go)
    assert azure.entra.tokens_issued() == 1
    assert len(set(tokens_used(azure))) == 1
    assert_ingested_once(azure, ids(decisions(10)))


def test_expired_token_is_never_presented_a_new_one_is_fetched(azure: Azure) -> None:
    """Tokens that expire in 2 s: after expiry the next call carries a new token, and the
    endpoint (which refuses expired tokens with 401) never sees the old one again."""
    azure.book.lifetime_seconds = 2

    async def go() -> None:
        async with running(azure) as sink:
            await sink.send(decisions(2))
            await asyncio.sleep(2.5)
            await sink.send(decisions(2, start=2))

    run(go)
    first, second = tokens_used(azure)
    assert first != second
    issued_first = azure.book.lookup(str(first))
    assert issued_first is not None
    assert issued_first.expires_at < time.time()
    assert all(c.status == 204 for c in azure.dce.calls), "no call with an expired token"
    assert_ingested_once(azure, ids(decisions(4)))


def test_revoked_token_is_dropped_and_a_new_one_fetched(azure: Azure) -> None:
    """401 from the endpoint: unavailable (uncharged), then the next send gets a fresh token."""

    async def go() -> None:
        async with running(azure) as sink:
            await sink.send(decisions(1))
            azure.book.revoke_all()
            with pytest.raises(SinkUnavailableError, match="refused the access token"):
                await sink.send(decisions(1, start=1))
            await sink.send(decisions(1, start=1))

    run(go)
    assert azure.entra.tokens_issued() == 2
    assert_ingested_once(azure, ["evt-0", "evt-1"])


def test_missing_role_assignment_is_named_by_send_and_health(azure: Azure) -> None:
    """A valid token without the role on the DCR: both send and health() say so precisely."""
    azure.dce.revoke(azure.principal, DCR_ID)

    async def go() -> None:
        async with running(azure) as sink:
            with pytest.raises(SinkUnavailableError) as info:
                await sink.send(decisions(2))
            health = await sink.health()
            azure.dce.grant(azure.principal, DCR_ID)
            await sink.send(decisions(2))
            assert (await sink.health()).ok
        for text in (str(info.value), health.detail):
            assert "role assignment missing" in text
            assert "Monitoring Metrics Publisher" in text
            assert DCR_ID in text
            assert CLIENT_ID in text
        assert not health.ok

    run(go)


@pytest.mark.parametrize(
    ("extra", "code", "meaning"),
    [
        ({"client_secret": "wrong-secret-value-0123456789"}, "AADSTS7000215", "secret is wrong"),
        (
            {"client_id": "11111111-2222-3333-4444-555555555555"},
            "AADSTS700016",
            "no such application",
        ),
    ],
)
def test_wrong_credential_is_told_apart_from_a_missing_role(
    azure: Azure, extra: dict[str, Any], code: str, meaning: str
) -> None:
    """Entra ID refuses: health and send name the AADSTS code, never the secret."""

    async def go() -> None:
        async with running(azure, **extra) as sink:
            health = await sink.health()
            with pytest.raises(SinkUnavailableError) as info:
                await sink.send(decisions(1))
        for text in (health.detail, str(info.value)):
            assert "no token from Entra ID" in text
            assert code in text
            assert meaning in text
            assert "role assignment" not in text
            assert CLIENT_SECRET not in text
            assert "wrong-secret" not in text

    run(go)
    assert azure.dce.event_ids() == []


def test_token_service_down_is_unavailable(azure: Azure) -> None:
    """Entra ID answering 503: no token, the sink is held, nothing charged."""
    azure.entra.fail_next = [(503, {"error": "temporarily_unavailable"})] * 10

    async def go() -> None:
        async with running(azure) as sink:
            with pytest.raises(SinkUnavailableError, match="no token from Entra ID"):
                await sink.send(decisions(1))

    run(go)


def test_certificate_credential(azure: Azure, tmp_path: Path) -> None:
    """A certificate (PEM key + cert from a file: reference) signs the client assertion."""
    key, cert = rsa_certificate()
    azure.entra.apps[CLIENT_ID].certificate = cert
    pem = tmp_path / "app.pem"
    pem.write_text(pem_bundle(key, cert))
    other_key, other_cert = rsa_certificate("not registered")
    stranger = tmp_path / "other.pem"
    stranger.write_text(pem_bundle(other_key, other_cert))
    settings = {"credential": "certificate", "client_secret": None}

    async def go() -> None:
        async with running(azure, certificate=f"file:{pem}", **settings) as sink:
            await sink.send(decisions(3))
        async with running(azure, certificate=f"file:{stranger}", **settings) as sink:
            health = await sink.health()
            assert not health.ok
            assert "certificate is not registered" in health.detail

    run(go)
    assert_ingested_once(azure, ids(decisions(3)))


def federated_token(key: rsa.RSAPrivateKey, *, subject: str = SUBJECT) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": subject,
        "aud": TOKEN_EXCHANGE_AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
    }
    return sign_jwt(key, claims, {"kid": "k1"})


def test_workload_identity_rereads_the_rotated_token_file(azure: Azure, tmp_path: Path) -> None:
    """The federated token file is read at each token request (the kubelet rotates it)."""
    issuer_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    azure.entra.apps[CLIENT_ID].federated[(ISSUER, SUBJECT)] = issuer_key.public_key()
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(federated_token(issuer_key))
    settings = {
        "credential": "workload_identity",
        "client_secret": None,
        "federated_token_file": str(token_file),
    }

    async def go() -> None:
        async with running(azure, **settings) as sink:
            await sink.send(decisions(1))
            # The cluster now hands out a token for another service account: refused.
            token_file.write_text(federated_token(issuer_key, subject="system:serviceaccount:x:y"))
            azure.book.revoke_all()
            with pytest.raises(SinkUnavailableError):
                await sink.send(decisions(1, start=1))
            with pytest.raises(SinkUnavailableError, match="AADSTS70021"):
                await sink.send(decisions(1, start=1))
            token_file.write_text(federated_token(issuer_key))
            await sink.send(decisions(1, start=1))

    run(go)
    assert_ingested_once(azure, ["evt-0", "evt-1"])


def test_managed_identity(azure: Azure, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user-assigned managed identity (App Service endpoint protocol) posts once granted."""
    client_id = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
    object_id = azure.entra.register_managed_identity(client_id)
    azure.dce.grant(object_id, DCR_ID)
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{azure.login.url}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", azure.entra.identity_header)
    settings = {
        "credential": "managed_identity",
        "client_id": client_id,
        "tenant_id": None,
        "client_secret": None,
    }

    async def go() -> None:
        async with running(azure, **settings) as sink:
            assert (await sink.health()).ok
            await sink.send(decisions(2))

    run(go)
    assert_ingested_once(azure, ["evt-0", "evt-1"])
    assert ("msi", "managed_identity", 200) in azure.entra.requests


def test_no_token_or_secret_reaches_the_logs(
    azure: Azure, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the service's logging at debug, sends, a 401, a refused secret and a 403 log
    neither the client secret, nor any access token, nor a body."""
    configure_logging(LogSettings(level="debug", format="json"))
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage() + repr(record.args))

    keep = Keep(level=logging.DEBUG)
    logging.getLogger().addHandler(keep)
    try:
        with structlog.testing.capture_logs() as captured:

            async def go() -> None:
                async with running(azure) as sink:
                    await sink.send(decisions(2, note="body-marker-7f3a"))
                    azure.book.revoke_all()
                    with pytest.raises(SinkUnavailableError):
                        await sink.send(decisions(1, start=2))
                    azure.dce.revoke(azure.principal, DCR_ID)
                    await sink.health()
                async with running(azure, client_secret="wrong-secret-value-0123456789") as sink:
                    await sink.health()

            run(go)
    finally:
        logging.getLogger().removeHandler(keep)
    text = "\n".join(records) + repr(captured) + capsys.readouterr().err
    secrets = [CLIENT_SECRET, "wrong-secret-value-0123456789", "body-marker-7f3a"]
    secrets += azure.book.all_tokens()
    secrets += [c.token for c in azure.dce.calls if c.token]
    assert secrets, "tokens were issued"
    leaked = [s for s in secrets if s in text]
    assert not leaked, "a secret or token reached the logs"
    assert TENANT_ID  # the tenant id is not a secret; it may appear
