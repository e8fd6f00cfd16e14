"""Every shipped deployment holds the edge limits its config sets (docs/ingress.md, "Sizing").

Worst case: every allowed connection has a body of ``max_body_bytes`` in flight. The
memory limit of each workload that takes webhooks must hold that on top of the process
itself, and the file descriptor limit must hold every connection of both listeners.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from receiver.settings import Settings
from tests.deploy.test_deploy import (
    DEPLOY,
    K8S_DIRS,
    check_config,
    compose,
    config_maps_in,
    pod_templates,
    role_of,
    workload_config,
)
from tests.deploy.test_systemd import unit

MIB = 1024**2
# The process itself (docs/ingress.md): an ingress-only replica, or everything with
# the SDK-based sinks loaded.
BASE = {"ingress": 96 * MIB, "all": 128 * MIB}
PER_CONNECTION_OVERHEAD = 16 * 1024
FD_MARGIN = 256  # the store, sinks, listeners, log files


def worst_case_bytes(settings: Settings, role: str) -> int:
    i = settings.ingress
    per_connection = i.max_body_bytes + i.max_header_bytes + PER_CONNECTION_OVERHEAD
    return BASE[role] + i.max_connections * per_connection


def quantity(text: str) -> int:
    """A Kubernetes / compose memory quantity (384Mi, 512m, 1Gi, 1G) in bytes."""
    m = re.fullmatch(r"([0-9]+)\s*(Ki|Mi|Gi|k|m|g|K|M|G)?[bB]?", str(text))
    assert m, text
    units = {"Ki": 1024, "Mi": MIB, "Gi": 1024**3, "k": 1024, "K": 1024, "m": MIB, "M": MIB}
    units |= {"g": 1024**3, "G": 1024**3}
    return int(m[1]) * units.get(m[2] or "", 1)


@pytest.mark.parametrize("directory", K8S_DIRS, ids=[d.name for d in K8S_DIRS])
def test_k8s_memory_limits_hold_the_connection_cap(
    directory: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """limits.memory >= base + max_connections x (max_body + max_header + overhead)."""
    config_maps = config_maps_in(directory)
    checked = 0
    for workload, template in pod_templates(directory):
        (container,) = template["spec"]["containers"]
        role = role_of(container["args"])
        if workload["kind"] == "Job" or role == "dispatch":
            continue  # no webhook listener
        text = workload_config(template, config_maps)
        settings = check_config(text, tmp_path, monkeypatch, capsys)
        limit = quantity(container["resources"]["limits"]["memory"])
        need = worst_case_bytes(settings, role)
        assert limit >= need, (
            f"{workload['metadata']['name']}: {limit // MIB} MiB holds fewer than"
            f" max_connections = {settings.ingress.max_connections} ({need // MIB} MiB needed)"
        )
        checked += 1
    assert checked


def test_compose_receiver_has_memory_and_file_limits_for_its_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The compose receiver sets a memory limit and a nofile ulimit that hold its cap."""
    receiver: dict[str, Any] = compose()["services"]["receiver"]
    env = receiver["environment"]
    mounts = [v.split(":") for v in receiver["volumes"]]
    source = next(DEPLOY / m[0] for m in mounts if m[1] == env["BIGHUB_SIEM_CONFIG"])
    settings = check_config(source.read_text(), tmp_path, monkeypatch, capsys)
    role = role_of(receiver["command"])
    assert quantity(receiver["mem_limit"]) >= worst_case_bytes(settings, role)
    nofile = receiver["ulimits"]["nofile"]
    assert min(nofile["soft"], nofile["hard"]) >= (
        settings.ingress.max_connections + settings.admin.max_connections + FD_MARGIN
    )


def test_systemd_file_limit_holds_both_listeners(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """LimitNOFILE is set (the default 1,024 is what 2,000 idle sockets exhausted)."""
    (value,) = unit()["Service"]["LimitNOFILE"]
    settings = check_config(
        (DEPLOY / "examples" / "systemd.toml").read_text(), tmp_path, monkeypatch, capsys
    )
    assert int(value) >= settings.ingress.max_connections + settings.admin.max_connections
    assert int(value) >= 65536
