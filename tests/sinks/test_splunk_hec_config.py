"""Settings of the HEC sink: URL, token reference, TLS, fields; registry and check-config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from receiver.settings import load_settings
from sinks import Sink, SinkConfig, sink_type
from sinks.splunk_hec import SplunkHecConfig, SplunkHecSink
from tests.harness import ROOT, SECRET


def _config(**extra: Any) -> SplunkHecConfig:
    values: dict[str, Any] = {"name": "hec", "url": "https://splunk.example:8088", "token": "t"}
    return SplunkHecConfig(**{**values, **extra})


def test_registered_as_splunk_hec() -> None:
    """type = "splunk_hec" resolves to the sink, which follows the Sink protocol."""
    assert sink_type("splunk_hec") is SplunkHecSink
    assert isinstance(SplunkHecSink(_config()), Sink)
    with pytest.raises(TypeError):
        SplunkHecSink(SinkConfig(name="x", type="splunk_hec"))


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://splunk.example:8088", "https://splunk.example:8088"),
        ("https://splunk.example:8088/", "https://splunk.example:8088"),
        ("https://splunk.example:8088/services/collector/event", "https://splunk.example:8088"),
        ("https://splunk.example:8088/services/collector", "https://splunk.example:8088"),
        ("http://lb.internal/splunk/services/collector/", "http://lb.internal/splunk"),
    ],
)
def test_url_is_kept_as_a_base(given: str, expected: str) -> None:
    """The endpoint people copy from Splunk's docs is reduced to the base URL."""
    assert _config(url=given).url == expected


@pytest.mark.parametrize(
    "url",
    ["splunk:8088", "ftp://splunk", "https://user:pw@splunk:8088", "https://splunk?token=x", ""],
)
def test_bad_urls_are_refused(url: str) -> None:
    """No scheme-less, non-HTTP, credential-carrying or query URLs."""
    with pytest.raises(ValidationError):
        _config(url=url)


def test_token_references_resolve_and_never_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """env: and file: references resolve to a SecretStr that no repr shows."""
    monkeypatch.setenv("HEC_TOKEN_TEST", "env-token-value")
    (tmp_path / "tok").write_text("file-token-value\n")
    by_env = _config(token="env:HEC_TOKEN_TEST")
    by_file = _config(token=f"file:{tmp_path / 'tok'}")
    assert by_env.token.get_secret_value() == "env-token-value"
    assert by_file.token.get_secret_value() == "file-token-value"
    for cfg in (by_env, by_file):
        assert "token-value" not in repr(cfg)
        assert "token-value" not in str(cfg.model_dump())


def test_missing_token_reference_names_the_reference_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unset env: reference fails validation, naming the variable."""
    monkeypatch.delenv("HEC_TOKEN_MISSING", raising=False)
    with pytest.raises(ValidationError, match="HEC_TOKEN_MISSING"):
        _config(token="env:HEC_TOKEN_MISSING")


def test_tls_settings(tmp_path: Path) -> None:
    """Verify is on by default; ca_bundle must exist and cannot go with tls_verify=false."""
    assert _config().tls_verify is True
    with pytest.raises(ValidationError, match="not a readable file"):
        _config(ca_bundle=tmp_path / "missing.pem")
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    assert _config(ca_bundle=ca).ca_bundle == ca
    with pytest.raises(ValidationError, match="choose one"):
        _config(ca_bundle=ca, tls_verify=False)


def test_field_and_index_names_are_checked() -> None:
    """Indexed field names are flat identifiers; the always-sent ones are not listed."""
    assert _config(payload_fields=["actor", "risk_score"]).payload_fields == ["actor", "risk_score"]
    for bad in (["_actor"], ["a.b"], ["event_id"]):
        with pytest.raises(ValidationError):
            _config(payload_fields=bad)
    with pytest.raises(ValidationError):
        _config(index="_internal")
    with pytest.raises(ValidationError):
        _config(categories={"decision": {"index": "Bad Index"}})
    with pytest.raises(ValidationError):
        _config(categories={"unknown": {"index": "x"}})


@pytest.mark.parametrize(
    "name", ["host", "source", "sourcetype", "index", "time", "punct", "date_hour", "Host"]
)
def test_payload_fields_may_not_shadow_splunk_default_fields(name: str) -> None:
    """A payload field named like a Splunk default field is refused, naming the field."""
    with pytest.raises(ValidationError, match="collides with a Splunk default field"):
        _config(payload_fields=["actor", name])


def test_defaults_stay_well_under_hec_limits() -> None:
    """Requests stay below 1 MB uncompressed; gzip on; ack off with a 300 s timeout."""
    cfg = _config()
    assert cfg.max_request_bytes < 1_000_000
    assert cfg.batch_max_bytes < cfg.max_request_bytes
    assert cfg.compression == "gzip"
    assert (cfg.ack, cfg.ack_timeout_seconds) == (False, 120.0)
    assert cfg.state_path() == Path("var/splunk_hec-hec.ack.json")


def test_settings_accept_a_splunk_hec_sink(tmp_path: Path) -> None:
    """The settings union validates [[sinks]] with type = "splunk_hec"."""
    settings = load_settings(
        data={
            "ingress": {"secrets": [SECRET]},
            "store": {"url": f"sqlite:///{tmp_path / 's.db'}"},
            "sinks": [
                {
                    "name": "splunk",
                    "type": "splunk_hec",
                    "url": "https://splunk:8088",
                    "token": "abc",
                    "categories": {"decision": {"sourcetype": "bighub:decision"}},
                }
            ],
        }
    )
    assert isinstance(settings.sinks[0], SplunkHecConfig)


def test_example_config_passes_check_config(tmp_path: Path) -> None:
    """deploy/examples/splunk.toml is valid once its secrets are in the environment."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "BIGHUB_WEBHOOK_SECRET": SECRET,
        "BIGHUB_SIEM_ADMIN_TOKEN": "admin-token-0123456789abcdef",
        "SPLUNK_HEC_TOKEN": "11111111-2222-3333-4444-555555555555",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "receiver",
            "check-config",
            "--config",
            str(ROOT / "deploy/examples/splunk.toml"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "splunk_hec" in done.stdout
