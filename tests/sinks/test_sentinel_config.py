"""``type = "sentinel"`` settings: validated without I/O, secrets only by reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from sinks import SinkConfig, sink_type
from sinks.sentinel import SentinelConfig, SentinelSink
from tests.fakes.entra import pem_bundle, rsa_certificate

DCR = "dcr-" + "a1" * 16
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "0b5d2f3e-6c1a-4e8b-9f0a-1c2d3e4f5a6b"
SECRET = "s3cr3t-value-never-shown-0123456789"


def values(**extra: Any) -> dict[str, Any]:
    return {
        "name": "sentinel",
        "endpoint": "https://bighub-abcd.westeurope-1.ingest.monitor.azure.com",
        "dcr_immutable_id": DCR,
        "tenant_id": TENANT,
        "client_id": CLIENT,
        "client_secret": "env:SENTINEL_TEST_SECRET",
        **extra,
    }


@pytest.fixture(autouse=True)
def _secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTINEL_TEST_SECRET", SECRET)


def errors(**extra: Any) -> str:
    with pytest.raises(ValidationError) as info:
        SentinelConfig(**values(**extra))
    text = str(info.value)
    assert SECRET not in text
    return text


def test_registered_with_its_config_model() -> None:
    """``type = "sentinel"`` resolves to the sink and its config model."""
    assert sink_type("sentinel") is SentinelSink
    assert SentinelSink.config_model is SentinelConfig


def test_client_secret_from_a_reference_never_shown() -> None:
    """env: and file: references resolve; the secret is in no repr or dump."""
    config = SentinelConfig(**values())
    assert config.client_secret is not None
    assert config.client_secret.get_secret_value() == SECRET
    assert SECRET not in repr(config)
    assert SECRET not in str(config.model_dump())
    assert config.streams.decision == "Custom-BighubDecisions"
    assert config.streams.rule == "Custom-BighubRuleChanges"
    assert config.scope == "https://monitor.azure.com//.default"


def test_secret_from_a_file(tmp_path: Path) -> None:
    """A file: reference is read at validation, its final newline dropped."""
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    config = SentinelConfig(**values(client_secret=f"file:{path}"))
    assert config.client_secret is not None
    assert config.client_secret.get_secret_value() == SECRET


@pytest.mark.parametrize(
    ("credential", "drop", "missing"),
    [
        ("client_secret", "client_secret", "client_secret"),
        ("client_secret", "tenant_id", "tenant_id"),
        ("certificate", "client_secret", "certificate"),
        ("workload_identity", "client_secret", "federated_token_file"),
    ],
)
def test_each_credential_names_what_it_lacks(
    credential: str, drop: str, missing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A credential kind without its parts is refused, naming them."""
    monkeypatch.delenv("AZURE_FEDERATED_TOKEN_FILE", raising=False)
    data = values(credential=credential)
    data.pop(drop)
    with pytest.raises(ValidationError, match=missing):
        SentinelConfig(**data)


def test_parts_of_another_credential_are_refused() -> None:
    """A client secret or tenant beside credential = managed_identity is a mistake, said so."""
    assert "tenant_id, client_secret not used" in errors(credential="managed_identity")


def test_managed_identity_needs_no_tenant_or_secret() -> None:
    """System-assigned managed identity: nothing but the endpoint and the DCR."""
    data = values(credential="managed_identity")
    for key in ("tenant_id", "client_id", "client_secret"):
        data.pop(key)
    assert SentinelConfig(**data).client_id is None


def test_workload_identity_reads_the_aks_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without federated_token_file, the path the AKS webhook sets is used."""
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", "/var/run/secrets/azure/tokens/token")
    data = values(credential="workload_identity")
    data.pop("client_secret")
    config = SentinelConfig(**data)
    assert config.federated_token_file == "/var/run/secrets/azure/tokens/token"


def test_certificate_must_hold_key_and_certificate(tmp_path: Path) -> None:
    """A PEM with only the certificate (no key) is refused at check-config time."""
    key, cert = rsa_certificate()
    bundle = pem_bundle(key, cert)
    good = tmp_path / "app.pem"
    good.write_text(bundle)
    data = values(credential="certificate", certificate=f"file:{good}")
    data.pop("client_secret")
    assert SentinelConfig(**data).certificate is not None
    only_cert = tmp_path / "cert.pem"
    only_cert.write_text(bundle[bundle.index("-----BEGIN CERTIFICATE-----") :])
    data["certificate"] = f"file:{only_cert}"
    with pytest.raises(ValidationError, match="private key and the certificate"):
        SentinelConfig(**data)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("endpoint", "http://dce.example", "https://"),
        ("dcr_immutable_id", "dcr-xyz", "32 hex digits"),
        ("dcr_immutable_id", "bighub-siem-dcr", "32 hex digits"),
        ("client_id", "not-a-guid", "GUID"),
        ("tenant_id", "bad tenant!", "tenant"),
        ("authority_host", "http://login.example", "host name"),
        ("max_call_bytes", 2_000_000, "less than or equal"),
        ("gzip_level", 0, "greater than or equal"),
    ],
)
def test_bad_values_are_refused(field: str, value: Any, message: str) -> None:
    """Each field checks its form without any network call."""
    assert message in errors(**{field: value})


def test_streams_are_custom_and_rule_changes_have_their_own() -> None:
    """Input streams are Custom-*; the rule stream cannot be shared with decisions."""
    assert "Custom-" in errors(streams={"decision": "BighubDecisions"})
    assert "stream of their own" in errors(streams={"rule": "Custom-BighubDecisions"})
    config = SentinelConfig(**values(streams={"approval": "Custom-BighubApprovals"}))
    assert config.streams.approval == "Custom-BighubApprovals"


def test_unknown_keys_are_refused() -> None:
    """extra = forbid: a typo is an error, not a silent default."""
    assert "Extra inputs" in errors(dcr_id=DCR)


def test_every_setting_is_in_the_docs() -> None:
    """docs/sentinel.md's settings table lists each key of the sentinel sink."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "sentinel.md").read_text()
    own = set(SentinelConfig.model_fields) - set(SinkConfig.model_fields) | {"type"}
    missing = [k for k in sorted(own) if f"`{k}`" not in docs]
    assert not missing, f"undocumented in docs/sentinel.md: {missing}"
