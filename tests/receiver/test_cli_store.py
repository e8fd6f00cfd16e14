"""``bighub-siem migrate`` and ``serve --role``, as real commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import base_config, write_config
from tests.services.postgres import pg_schema, postgres_url


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "receiver", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def config_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    store = {"url": request.getfixturevalue("pg_schema")} if request.param == "postgres" else {}
    return write_config(tmp_path / "config.toml", base_config(tmp_path, store=store))


def test_migrate_creates_then_reports_up_to_date(config_file: Path) -> None:
    """The first migrate creates the schema; a second finds nothing to do."""
    first = _cli("migrate", "--config", str(config_file), cwd=config_file.parent)
    assert first.returncode == 0, first.stderr
    assert "migrated from version 0 to 2" in first.stdout
    second = _cli("migrate", "--config", str(config_file), cwd=config_file.parent)
    assert second.returncode == 0, second.stderr
    assert "up to date (version 2)" in second.stdout


@pytest.mark.parametrize("role", ["ingress", "dispatch"])
def test_split_roles_are_refused_on_sqlite(tmp_path: Path, role: str) -> None:
    """SQLite belongs to one process: serve --role ingress|dispatch exits 2 and says why."""
    cfg = write_config(tmp_path / "config.toml", base_config(tmp_path))
    done = _cli("serve", "--config", str(cfg), "--role", role, cwd=tmp_path)
    assert done.returncode == 2
    assert f"--role {role}" in done.stderr
    assert "PostgreSQL" in done.stderr
    assert not (tmp_path / "spool.db").exists()  # refused before touching the store


def test_unknown_role_is_a_usage_error(tmp_path: Path) -> None:
    """argparse rejects a role that does not exist."""
    cfg = write_config(tmp_path / "config.toml", base_config(tmp_path))
    done = _cli("serve", "--config", str(cfg), "--role", "everything", cwd=tmp_path)
    assert done.returncode == 2
    assert "invalid choice" in done.stderr
