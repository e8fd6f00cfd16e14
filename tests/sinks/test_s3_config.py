"""``type = "s3"`` settings: defaults, validation, secret references, the example file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from receiver.cli import main
from receiver.errors import ConfigError
from receiver.settings import load_settings
from sinks import sink_type
from sinks.s3 import S3Config, S3Sink
from tests.harness import ROOT, SECRET
from tests.sinks.s3_support import keypair

KEYS = keypair()


def config(**values: Any) -> S3Config:
    return S3Config(
        **{"name": "archive", "bucket": "audit-bucket", "signing_key": KEYS.private_pem, **values}
    )


def test_defaults_are_sized_against_small_files() -> None:
    """Big batches and a long wait by default; SSE on, no lock unless asked."""
    cfg = config()
    assert (cfg.batch_max_events, cfg.batch_max_bytes, cfg.batch_max_wait_seconds) == (
        10_000,
        64 * 1024 * 1024,
        300.0,
    )
    assert cfg.server_side_encryption == "AES256"
    assert cfg.object_lock_mode == "none"
    assert cfg.retention_days is None
    assert cfg.access_key_id is None  # the boto3 chain


def test_s3_is_a_registered_sink_type_in_the_settings_union() -> None:
    """The registry knows "s3" and the settings validate its table."""
    assert sink_type("s3") is S3Sink
    settings = load_settings(
        data={
            "ingress": {"secrets": [SECRET]},
            "sinks": [
                {
                    "name": "archive",
                    "type": "s3",
                    "bucket": "audit-bucket",
                    "signing_key": KEYS.private_pem,
                }
            ],
        }
    )
    assert isinstance(settings.sinks[0], S3Config)
    with pytest.raises(ConfigError) as info:
        load_settings(
            data={
                "ingress": {"secrets": [SECRET]},
                "sinks": [
                    {
                        "name": "a",
                        "type": "s3",
                        "bucket": "audit-bucket",
                        "signing_key": KEYS.private_pem,
                        "bogus": 1,
                    }
                ],
            }
        )
    assert info.value.problems == ["sinks.0.bogus: unknown key"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kms_key_id": "k"}, "kms_key_id needs"),
        ({"object_lock_mode": "COMPLIANCE"}, "go together"),
        ({"retention_days": 30}, "go together"),
        ({"access_key_id": "a"}, "both access_key_id"),
        ({"session_token": "t"}, "session_token needs"),
        ({"bucket": "Bad_Bucket"}, "bucket name"),
        ({"prefix": "a/_b"}, 'start with "_"'),
        ({"prefix": "a b"}, "letters, digits"),
        ({"endpoint_url": "minio:9000"}, "http://"),
        ({"storage_class": "GLACIER"}, "storage_class"),
        ({"multipart_part_bytes": 32 * 2**20}, "must not exceed"),
        ({"signing_key": "not-a-key"}, "signing_key"),
    ],
)
def test_invalid_settings_are_refused(values: dict[str, Any], message: str) -> None:
    """Inconsistent or unsafe settings fail validation with a precise message."""
    with pytest.raises(ValidationError, match=message):
        config(**values)


def test_prefix_slashes_are_trimmed() -> None:
    """Leading and trailing slashes are dropped; an empty prefix is the bucket root."""
    assert config(prefix="/a/b/").key_prefix() == "a/b/"
    assert config(prefix="").key_prefix() == ""


def test_secrets_come_from_env_and_file_references(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """env: and file: references resolve; the repr shows none of them."""
    monkeypatch.setenv("T_AWS_SECRET", "s3-secret-value")
    key_file = tmp_path / "signing.pem"
    key_file.write_text(KEYS.private_pem + "\n")
    cfg = config(
        access_key_id="AKIAEXAMPLE",
        secret_access_key="env:T_AWS_SECRET",
        signing_key=f"file:{key_file}",
    )
    assert cfg.secret_access_key is not None
    assert cfg.secret_access_key.get_secret_value() == "s3-secret-value"
    assert cfg.private_key().public_key() == KEYS.private.public_key()
    shown = repr(cfg) + str(cfg.model_dump())
    assert "s3-secret-value" not in shown
    assert "PRIVATE KEY" not in shown
    assert "AKIAEXAMPLE" not in shown


def test_missing_references_name_the_reference_not_a_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unset variable is reported by name."""
    monkeypatch.delenv("T_NOT_SET", raising=False)
    with pytest.raises(ValidationError, match="env:T_NOT_SET"):
        config(signing_key="env:T_NOT_SET")


def test_example_config_passes_check_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """deploy/examples/s3.toml validates with its documented environment."""
    monkeypatch.setenv("BIGHUB_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("BIGHUB_SIEM_ADMIN_TOKEN", "admin-token-0123456789")
    monkeypatch.setenv("BIGHUB_SIEM_ARCHIVE_SIGNING_KEY", KEYS.private_pem)
    code = main(["check-config", "--config", str(ROOT / "deploy" / "examples" / "s3.toml")])
    assert code == 0
    assert "archive (s3)" in capsys.readouterr().out
