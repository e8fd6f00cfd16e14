"""The systemd unit in deploy/systemd/ and the local base script, checked against the code."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from receiver.cli._errors import ExitCode
from tests.deploy.test_deploy import (
    DEPLOY,
    ROOT,
    UNIT,
    check_config,
    cli_args_valid,
    spool_dir,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def unit() -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_systemd_unit_is_hardened() -> None:
    """DynamicUser, a read-only system, no capabilities, a state directory, a sandbox."""
    service = unit()["Service"]
    expected = {
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "CapabilityBoundingSet": "",
        "StateDirectory": "bighub-siem",
    }
    for key, value in expected.items():
        assert service.get(key) == [value], key
    assert service["SystemCallFilter"][0] == "@system-service"
    assert unit()["Install"]["WantedBy"] == ["multi-user.target"]
    # Configuration and installation errors are not restarted into a loop.
    assert set(service["RestartPreventExitStatus"][0].split()) == {
        str(int(ExitCode.CONFIG)),
        str(int(ExitCode.MISSING_EXTRA)),
    }


def test_systemd_unit_install_lines_work_from_a_checkout() -> None:
    """The unit's install comment installs from a path or a wheel, never from an index."""
    install = [line for line in UNIT.read_text().splitlines() if "pip install" in line]
    assert install
    for line in install:
        target = shlex.split(line.split("pip install", 1)[1].split("#")[0])[0]
        assert target.startswith("/") or target.startswith("bighub_siem-"), line
        extras = set(re.findall(r"\[([a-z0-9,]+)\]", target)[0].split(","))
        known = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        assert extras <= set(known["optional-dependencies"])


def test_local_base_script_is_valid_and_provides_what_the_dockerfile_needs() -> None:
    """deploy/local-base.sh parses (bash -n) and installs python, venv and CA certificates."""
    script = DEPLOY / "local-base.sh"
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    text = script.read_text()
    for package in ("python3", "python3-venv", "python-is-python3", "ca-certificates"):
        assert re.search(rf"[=,]{package}[,\s]", text), package


def test_systemd_unit_runs_the_example_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ExecStart is a valid command on a config under ConfigurationDirectory whose spool
    is in StateDirectory; without capabilities the listeners must use high ports."""
    service = unit()["Service"]
    for key in ("ExecStartPre", "ExecStart"):
        program, *argv = shlex.split(service[key][0])
        assert program == "/opt/bighub-siem/bin/bighub-siem"
        cli_args_valid(argv)
        config = Path(argv[argv.index("--config") + 1])
        assert config.parent == Path("/etc") / service["ConfigurationDirectory"][0]
    assert service["Environment"] == [f"BIGHUB_SIEM_CONFIG={config}"]
    settings = check_config(
        (DEPLOY / "examples" / "systemd.toml").read_text(), tmp_path, monkeypatch, capsys
    )
    state = Path("/var/lib") / service["StateDirectory"][0]
    assert spool_dir(settings) == state
    assert service["WorkingDirectory"] == [str(state)]
    assert settings.ingress.port > 1024
    assert settings.admin.port > 1024
    assert service["EnvironmentFile"] == [str(config.parent / "secrets.env")]
