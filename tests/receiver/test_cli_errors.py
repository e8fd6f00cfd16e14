"""Each way a first deployment fails ends in a short message naming the setting, no
traceback, and the documented exit code (receiver/cli/_errors.py, docs/operations.md)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from receiver.cli._errors import ExitCode
from tests.conftest import require_service
from tests.harness import SECRET, base_config, free_port, write_config


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the developer's own BIGHUB_SIEM_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIGHUB_SIEM_")}
    return {**env, **extra}


def run_cli(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    block: Sequence[str] = (),
    prefix: Sequence[str] = (),
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``bighub-siem ARGS`` in a subprocess; ``block`` makes those modules unimportable,
    as if their extra were not installed (``sys.modules[name] = None`` is how Python
    itself marks a module that must not be imported)."""
    code = (
        "import sys\n"
        f"for name in {list(block)!r}: sys.modules[name] = None\n"
        "from receiver.cli import main\n"
        "raise SystemExit(main(sys.argv[1:]))\n"
    )
    return subprocess.run(
        [*prefix, sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean_env() if env is None else env,
        timeout=timeout,
        check=False,
    )


def is_log_record(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def assert_short_error(done: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    """Exit ``code``; stderr ends in one or two lines naming every needle (before them only
    structured log records, e.g. a driver's retries); no traceback."""
    lines = done.stderr.strip().splitlines()
    message = [line for line in lines if not is_log_record(line)]
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    assert 1 <= len(message) <= 2, done.stderr
    assert lines[-len(message) :] == message, done.stderr  # the message comes last
    assert message[0].startswith("bighub-siem: ")
    for needle in needles:
        assert needle in "\n".join(message)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "config.toml", base_config(tmp_path))


# -- no configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["serve"],
        ["check-config"],
        ["migrate"],
        ["dead-letters", "list"],
        ["replay", "--dry-run"],
        ["send-test"],
    ],
    ids=lambda a: " ".join(a),
)
def test_no_configuration_says_how_to_give_one(tmp_path: Path, argv: list[str]) -> None:
    """Without --config, BIGHUB_SIEM_CONFIG or any BIGHUB_SIEM_* setting: exit 2, one line."""
    done = run_cli(*argv, cwd=tmp_path)
    assert_short_error(
        done,
        ExitCode.CONFIG,
        "no configuration given; pass --config FILE or set BIGHUB_SIEM_CONFIG",
    )
    assert not (tmp_path / "var").exists()  # nothing was created in the working directory


def test_environment_only_configuration_is_still_accepted(tmp_path: Path) -> None:
    """Settings given only through BIGHUB_SIEM_* variables are a configuration."""
    env = clean_env(
        BIGHUB_SIEM_INGRESS__SECRETS=f'["{SECRET}"]',
        BIGHUB_SIEM_SINKS='[{"name": "console", "type": "stdout"}]',
    )
    done = run_cli("check-config", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert f"store sqlite ({Path('var/spool.db')})" in done.stdout  # the working directory's


# -- the spool ------------------------------------------------------------------------------


def unprivileged() -> list[str]:
    """A command prefix under which the CLI cannot write directories it may not write.

    As root (CI here), it keeps the uid but drops the capabilities that let root write
    anywhere (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so file modes apply as they do to
    any service user; the CLI still runs from the same checkout and virtualenv.
    """
    if os.getuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    prefix = [setpriv or "setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    probe = [*prefix, sys.executable, "-c", "import receiver"]
    works = setpriv is not None and subprocess.run(probe, check=False).returncode == 0
    require_service(
        works,
        "a way to run the CLI without write access to everything",
        "setpriv (util-linux) able to drop capabilities",
    )
    return prefix


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory outside pytest's private (0700) tree, so another uid can reach it."""
    path = Path(tempfile.mkdtemp(prefix="bighub-siem-cli-errors-"))
    path.chmod(0o755)
    yield path
    for sub in path.rglob("*"):
        if sub.is_dir():
            sub.chmod(0o755)
    shutil.rmtree(path)


@pytest.fixture
def read_only_spool_dir(shared_dir: Path) -> Path:
    """A directory the unprivileged user can enter but not write (a root-owned mount)."""
    spool = shared_dir / "spool"
    spool.mkdir()
    spool.chmod(0o555)
    return spool


def test_unwritable_spool_directory_serve(shared_dir: Path, read_only_spool_dir: Path) -> None:
    """serve with a spool directory it cannot write: exit 4, names store.url and the fix."""
    cfg = base_config(shared_dir, store={"url": f"sqlite:///{read_only_spool_dir / 'spool.db'}"})
    path = write_config(shared_dir / "config.toml", cfg)
    done = run_cli("serve", "--config", str(path), cwd=shared_dir, prefix=unprivileged())
    assert_short_error(
        done, ExitCode.STORE, "store.url", str(read_only_spool_dir), "writable", "denied"
    )


def test_unwritable_spool_directory_dead_letters(
    shared_dir: Path, read_only_spool_dir: Path
) -> None:
    """dead-letters on a spool it cannot open for writing: exit 4, not a StoreError trace."""
    spool = read_only_spool_dir / "spool.db"
    read_only_spool_dir.chmod(0o755)
    spool.write_bytes(b"")  # made by root, as after a first run as the wrong user
    read_only_spool_dir.chmod(0o555)
    cfg = base_config(shared_dir, store={"url": f"sqlite:///{spool}"})
    path = write_config(shared_dir / "config.toml", cfg)
    done = run_cli(
        "dead-letters", "list", "--config", str(path), cwd=shared_dir, prefix=unprivileged()
    )
    assert_short_error(done, ExitCode.STORE, "store.url", str(read_only_spool_dir))


def test_spool_directory_that_cannot_exist(tmp_path: Path) -> None:
    """A spool path through a regular file (a typo, a mount missing): exit 4, any user."""
    (tmp_path / "not-a-dir").write_text("")
    url = f"sqlite:///{tmp_path / 'not-a-dir' / 'spool.db'}"
    path = write_config(tmp_path / "config.toml", base_config(tmp_path, store={"url": url}))
    for argv in (["serve"], ["migrate"]):
        done = run_cli(*argv, "--config", str(path), cwd=tmp_path)
        assert_short_error(done, ExitCode.STORE, "store.url", str(tmp_path / "not-a-dir"))


def test_missing_spool_is_not_created_by_readers(tmp_path: Path, config: Path) -> None:
    """dead-letters on a spool that does not exist: exit 4, says where it looked."""
    done = run_cli("dead-letters", "list", "--config", str(config), cwd=tmp_path)
    assert_short_error(done, ExitCode.STORE, "store.url: no spool at", str(tmp_path / "spool.db"))
    assert not (tmp_path / "spool.db").exists()


# -- listeners --------------------------------------------------------------------------------


@pytest.mark.parametrize("section", ["ingress", "admin"])
def test_busy_port_names_the_setting(tmp_path: Path, section: str) -> None:
    """A port already taken: exit 5 (never uvicorn's 3), names ingress.port / admin.port."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        cfg = base_config(tmp_path, **{section: {"port": port}})
        path = write_config(tmp_path / "config.toml", cfg)
        done = run_cli("serve", "--config", str(path), cwd=tmp_path)
    assert_short_error(
        done, ExitCode.LISTENER, f"{section}.port: 127.0.0.1:{port} is already in use"
    )
    assert f"BIGHUB_SIEM_{section.upper()}__PORT" in done.stderr
    assert not (tmp_path / "spool.db").exists()  # refused before the store was touched


def test_listen_address_not_on_this_machine(tmp_path: Path) -> None:
    """An ingress.host that is no local address: exit 5, names ingress.host."""
    cfg = base_config(tmp_path, ingress={"host": "192.0.2.1"})  # TEST-NET-1, never local
    path = write_config(tmp_path / "config.toml", cfg)
    done = run_cli("serve", "--config", str(path), cwd=tmp_path)
    assert_short_error(done, ExitCode.LISTENER, "ingress.host", "192.0.2.1")


# -- missing extras -----------------------------------------------------------------------


KAFKA_SINK = {"name": "events", "type": "kafka", "bootstrap_servers": ["127.0.0.1:9092"]}


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_missing_extra_names_the_sink_and_how_to_install(tmp_path: Path, command: str) -> None:
    """A kafka sink without kafka-python: exit 3, names sinks.0 and the extra to install."""
    path = write_config(tmp_path / "config.toml", base_config(tmp_path, sinks=[KAFKA_SINK]))
    done = run_cli(command, "--config", str(path), cwd=tmp_path, block=["kafka"])
    assert_short_error(
        done,
        ExitCode.MISSING_EXTRA,
        "sinks.0",
        "kafka-python",
        "'kafka'",
        "pip install -e '.[kafka]'",
    )


def test_missing_postgres_driver_names_store_url(tmp_path: Path) -> None:
    """A PostgreSQL store without psycopg: exit 3, names store.url and the postgres extra."""
    cfg = base_config(tmp_path, store={"url": "postgresql://u@127.0.0.1:5432/db"})
    path = write_config(tmp_path / "config.toml", cfg)
    done = run_cli("check-config", "--config", str(path), cwd=tmp_path, block=["psycopg"])
    assert_short_error(done, ExitCode.MISSING_EXTRA, "store.url", "psycopg", "'postgres'")


def test_missing_extra_for_verify_archive(tmp_path: Path) -> None:
    """verify-archive without boto3: exit 3 and the s3 extra."""
    key = tmp_path / "k.pub"
    key.write_text("")
    done = run_cli(
        "verify-archive", "--bucket", "b", "--public-key", str(key), cwd=tmp_path, block=["boto3"]
    )
    assert_short_error(done, ExitCode.MISSING_EXTRA, "boto3", "'s3'")


def test_missing_extra_among_other_problems_is_invalid_config(tmp_path: Path) -> None:
    """Other problems too: exit 2 listing them all (the extra's line among them)."""
    cfg = base_config(tmp_path, sinks=[KAFKA_SINK], store={"urll": "x"})
    path = write_config(tmp_path / "config.toml", cfg)
    done = run_cli("check-config", "--config", str(path), cwd=tmp_path, block=["kafka"])
    assert done.returncode == ExitCode.CONFIG
    assert "store.urll: unknown key" in done.stderr
    assert "kafka-python" in done.stderr
    assert "Traceback" not in done.stderr


# -- unreachable store ------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["serve"], ["dead-letters", "list"]], ids=" ".join)
def test_unreachable_postgres(tmp_path: Path, argv: list[str]) -> None:
    """Nothing listens at the database's address: exit 4, names store.url, no password."""
    url = f"postgresql://bighub:pw-must-not-show@127.0.0.1:{free_port()}/bighub"
    path = write_config(tmp_path / "config.toml", base_config(tmp_path, store={"url": url}))
    done = run_cli(*argv, "--config", str(path), cwd=tmp_path, timeout=90)
    assert_short_error(done, ExitCode.STORE, "store.url", "PostgreSQL at 127.0.0.1:")
    assert "pw-must-not-show" not in done.stderr


# -- secret references ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "overrides"),
    [
        ("ingress.secrets.0", {"ingress": {"secrets": ["env:T_UNSET_WEBHOOK_SECRET"]}}),
        ("admin.token", {"admin": {"token": "file:/nonexistent/admin-token"}}),
        (
            "sinks.0.token",
            {
                "sinks": [
                    {
                        "name": "splunk",
                        "type": "splunk_hec",
                        "url": "https://splunk.example:8088",
                        "token": "env:T_UNSET_HEC_TOKEN",
                    }
                ]
            },
        ),
    ],
)
def test_bad_secret_reference_names_the_key(
    tmp_path: Path, where: str, overrides: dict[str, object]
) -> None:
    """An env:/file: reference that does not resolve: exit 2, names the key and the reference."""
    path = write_config(tmp_path / "config.toml", base_config(tmp_path, **overrides))
    for command in ("check-config", "serve"):
        done = run_cli(command, "--config", str(path), cwd=tmp_path)
        assert_short_error(done, ExitCode.CONFIG, "configuration is invalid", where)
        assert "T_UNSET" in done.stderr or "/nonexistent/admin-token" in done.stderr


def test_store_commands_need_no_webhook_secret(tmp_path: Path) -> None:
    """dead-letters and migrate read only [store]: unset secret references do not matter."""
    cfg = base_config(
        tmp_path,
        ingress={"secrets": ["env:T_UNSET_WEBHOOK_SECRET"]},
        admin={"token": "env:T_UNSET_ADMIN_TOKEN"},
    )
    path = write_config(tmp_path / "config.toml", cfg)
    migrated = run_cli("migrate", "--config", str(path), cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    listed = run_cli("dead-letters", "list", "--config", str(path), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == "no dead letters"
