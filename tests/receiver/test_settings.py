"""Configuration: the documented shape, env overrides, secret references, and check-config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from receiver.cli import main
from receiver.errors import ConfigError
from receiver.settings import load_settings

ISSUE_SHAPE = """
[ingress]
host = "127.0.0.1"
port = 8080
path = "/webhooks/bighub"
secrets = ["env:BIGHUB_WEBHOOK_SECRET"]
tolerance_seconds = 300
max_body_bytes = 1048576
[store]
url = "sqlite:///var/spool.db"
[admin]
host = "127.0.0.1"
port = 9464
token = "env:BIGHUB_SIEM_ADMIN_TOKEN"
[[sinks]]
name = "console"
type = "stdout"
events = ["*"]
"""

WEBHOOK = "whsec-test-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIGHUB_WEBHOOK_SECRET", WEBHOOK)
    monkeypatch.setenv("BIGHUB_SIEM_ADMIN_TOKEN", ADMIN)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_documented_shape_loads(tmp_path: Path, env: None) -> None:
    """The exact configuration from the docs loads, with secrets resolved."""
    s = load_settings(write(tmp_path, ISSUE_SHAPE))
    assert s.ingress.secrets[0].get_secret_value() == WEBHOOK
    assert s.admin.token is not None
    assert s.admin.token.get_secret_value() == ADMIN
    assert [(k.name, k.type, k.events) for k in s.sinks] == [("console", "stdout", ["*"])]
    assert WEBHOOK not in repr(s)
    assert ADMIN not in repr(s)


def test_env_overrides_file(tmp_path: Path, env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """BIGHUB_SIEM_ variables with __ nesting override the file."""
    monkeypatch.setenv("BIGHUB_SIEM_INGRESS__PORT", "9999")
    monkeypatch.setenv("BIGHUB_SIEM_STORE__MAX_SPOOL_EVENTS", "42")
    s = load_settings(write(tmp_path, ISSUE_SHAPE))
    assert (s.ingress.port, s.store.max_spool_events) == (9999, 42)


def test_file_secret_reference(tmp_path: Path, env: None) -> None:
    """file: references are read and their trailing newline dropped."""
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file-0123456789\n")
    s = load_settings(
        write(tmp_path, ISSUE_SHAPE.replace("env:BIGHUB_WEBHOOK_SECRET", f"file:{secret_file}"))
    )
    assert s.ingress.secrets[0].get_secret_value() == "from-a-file-0123456789"


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        (("[store]", "[store]\nurll = 1"), "store.urll", "unknown key"),
        (("port = 8080", 'port = "eighty"'), "ingress.port", "integer"),
        (('type = "stdout"', 'type = "carrier-pigeon"'), "sinks.0.type", "unknown sink type"),
        (
            ("env:BIGHUB_WEBHOOK_SECRET", "env:NOT_SET_ANYWHERE_XYZ"),
            "ingress.secrets.0",
            "NOT_SET_ANYWHERE_XYZ",
        ),
        (
            ("env:BIGHUB_WEBHOOK_SECRET", "file:/nonexistent/secret"),
            "ingress.secrets.0",
            "cannot read",
        ),
        (
            ('"env:BIGHUB_WEBHOOK_SECRET"', '"short-secret"'),
            "ingress.secrets.0",
            "shorter than 16 bytes",
        ),
        (('events = ["*"]', 'events = ["*"]\nbogus = true'), "sinks.0.bogus", "unknown key"),
        (("[store]", "surprise = 1\n[store]"), "surprise", "unknown key"),
    ],
)
def test_check_config_names_the_bad_key(
    tmp_path: Path,
    env: None,
    capsys: pytest.CaptureFixture[str],
    change: tuple[str, str],
    key: str,
    message: str,
) -> None:
    """check-config exits 2 naming the bad key, and never prints a secret."""
    path = write(tmp_path, ISSUE_SHAPE.replace(*change, 1))
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{key}: " in err
    assert message in err
    assert "short-secret" not in err
    assert WEBHOOK not in err


def test_check_config_ok(tmp_path: Path, env: None, capsys: pytest.CaptureFixture[str]) -> None:
    """A valid file passes with a one-line summary."""
    assert main(["check-config", "--config", str(write(tmp_path, ISSUE_SHAPE))]) == 0
    assert "config ok" in capsys.readouterr().out


def test_duplicate_sink_names(tmp_path: Path, env: None) -> None:
    """Two sinks with one name are refused."""
    text = ISSUE_SHAPE + '[[sinks]]\nname = "console"\ntype = "stdout"\n'
    with pytest.raises(ConfigError, match="unique"):
        load_settings(write(tmp_path, text))


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    """A missing file or broken TOML is a ConfigError, not a traceback."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[ingress\n"))


@pytest.mark.parametrize(
    ("written", "advice"),
    [
        ('"BIGHUB_WEBHOOK_SECRET"', 'write "env:BIGHUB_WEBHOOK_SECRET"'),
        ('"MY_SECRET_2"', 'write "env:MY_SECRET_2"'),
        ('"/run/secrets/bighub_webhook"', 'write "file:/run/secrets/bighub_webhook"'),
        ('"./secrets/webhook.txt"', 'write "file:./secrets/webhook.txt"'),
        ('"../webhook-secret"', 'write "file:../webhook-secret"'),
    ],
)
def test_check_config_refuses_a_reference_without_its_prefix(
    tmp_path: Path,
    env: None,
    capsys: pytest.CaptureFixture[str],
    written: str,
    advice: str,
) -> None:
    """A secret that looks like an env var name or a path is refused, saying what to write."""
    path = write(tmp_path, ISSUE_SHAPE.replace('"env:BIGHUB_WEBHOOK_SECRET"', written, 1))
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "ingress.secrets.0: " in err
    assert advice in err
    assert WEBHOOK not in err


def test_an_existing_file_given_as_a_literal_secret_is_refused(
    tmp_path: Path, env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """An absolute path naming a file, whatever its spelling, is refused as a literal secret."""
    secret_file = tmp_path / "Secret.Key"
    secret_file.write_text("0123456789abcdef0123")
    path = write(tmp_path, ISSUE_SHAPE.replace("env:BIGHUB_SIEM_ADMIN_TOKEN", str(secret_file)))
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert (
        f'admin.token: Value error, this looks like a file path, not a secret; to read the secret from the file write "file:{secret_file}"'
        in err
    )
    assert "0123456789abcdef0123" not in err


@pytest.mark.parametrize(
    "literal",
    [
        "whsec_3f9a0c1d2e4b5a6978",  # lower-case prefix: not an env var name
        "/Ab9dEf+GhIjkLmn0pq==xyz",  # base64 starting with "/": has "+", "=" and capitals
        "K7MDENG/bPxRfiCYEXAMPLEKEY",  # base64 with "/" inside
        "0123456789ABCDEF0123",  # hex: no "_" between words
    ],
)
def test_random_literal_secrets_are_still_accepted(literal: str) -> None:
    """Literals that do not look like references keep working (discouraged, not refused)."""
    data = {
        "ingress": {"secrets": [literal]},
        "sinks": [{"name": "c", "type": "stdout"}],
    }
    assert load_settings(data=data).ingress.secrets[0].get_secret_value() == literal


def test_edge_limits_have_safe_defaults_and_bounds() -> None:
    """The [ingress] edge limits default to finite values and refuse nonsense."""
    data = {"ingress": {"secrets": ["x" * 20]}, "sinks": [{"name": "c", "type": "stdout"}]}
    ingress = load_settings(data=data).ingress
    assert ingress.max_header_bytes == 16384
    assert ingress.max_header_count == 100
    assert ingress.header_timeout_seconds == 10
    assert ingress.body_timeout_seconds == 30
    assert ingress.keepalive_timeout_seconds == 65
    assert ingress.max_connections == 256
    for key, bad in (
        ("max_header_bytes", 10**9),
        ("max_header_count", 0),
        ("header_timeout_seconds", 0),
        ("body_timeout_seconds", -1),
        ("keepalive_timeout_seconds", 0),
        ("max_connections", 0),
    ):
        with pytest.raises(ConfigError, match=f"ingress.{key}"):
            load_settings(data={**data, "ingress": {"secrets": ["x" * 20], key: bad}})


# -- relative SQLite paths ------------------------------------------------------------------

MINIMAL = """
[ingress]
secrets = ["env:BIGHUB_WEBHOOK_SECRET"]
[[sinks]]
name = "console"
type = "stdout"
"""


def test_relative_sqlite_path_is_relative_to_the_config_file(
    tmp_path: Path, env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sqlite:///var/spool.db in a file means var/spool.db next to that file, from any cwd."""
    conf = tmp_path / "etc"
    conf.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = conf / "c.toml"
    path.write_text(ISSUE_SHAPE)
    assert load_settings(path).store.url == f"sqlite:///{conf / 'var' / 'spool.db'}"
    path.write_text(ISSUE_SHAPE.replace("sqlite:///var/spool.db", "sqlite:///../data/s.db"))
    assert load_settings(path).store.url == f"sqlite:///{tmp_path / 'data' / 's.db'}"
    path.write_text(MINIMAL)  # the default URL is relative too
    assert load_settings(path).store.url == f"sqlite:///{conf / 'var' / 'spool.db'}"
    path.write_text(ISSUE_SHAPE.replace("sqlite:///var/spool.db", "sqlite:////srv/s.db"))
    assert load_settings(path).store.url == "sqlite:////srv/s.db"  # absolute stays


def test_relative_sqlite_path_from_the_environment_is_relative_to_cwd(
    tmp_path: Path, env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A URL set through the environment, or environment-only config, keeps the working dir."""
    path = write(tmp_path, ISSUE_SHAPE)
    monkeypatch.setenv("BIGHUB_SIEM_STORE__URL", "sqlite:///here/spool.db")
    assert load_settings(path).store.url == "sqlite:///here/spool.db"
    monkeypatch.setenv("BIGHUB_SIEM_INGRESS__SECRETS", '["env:BIGHUB_WEBHOOK_SECRET"]')
    monkeypatch.setenv("BIGHUB_SIEM_SINKS", '[{"name": "c", "type": "stdout"}]')
    monkeypatch.delenv("BIGHUB_SIEM_STORE__URL")
    assert load_settings(None).store.url == "sqlite:///var/spool.db"


def test_migrate_from_another_directory_uses_the_config_files_spool(
    tmp_path: Path, env: None
) -> None:
    """`migrate --config etc/c.toml` run elsewhere creates etc/var/spool.db, nothing in cwd."""
    conf = tmp_path / "etc"
    conf.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (conf / "c.toml").write_text(ISSUE_SHAPE)
    done = subprocess.run(
        [sys.executable, "-m", "receiver", "migrate", "--config", str(conf / "c.toml")],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (conf / "var" / "spool.db").exists()
    assert list(elsewhere.iterdir()) == []
