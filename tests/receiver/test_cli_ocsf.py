"""``bighub-siem ocsf preview``: the OCSF record(s) a body becomes, for tuning the map."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from receiver.cli import main
from tests.harness import base_config, event_body, write_config
from tests.sinks.ocsf_validator import assert_valid


def _run(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    config: Path,
    stdin: bytes,
    *args: str,
) -> tuple[int, list[dict[str, Any]], str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    code = main(["ocsf", "preview", "--config", str(config), "--compact", *args])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def test_preview_uses_each_ocsf_sinks_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One record per OCSF sink, in that sink's version and field map."""
    sinks = [
        {"name": "console", "type": "stdout"},  # export encoding: not previewed
        {
            "name": "lake",
            "type": "stdout",
            "encoding": "ocsf",
            "ocsf_version": "1.1.0",
            "ocsf": {"paths": {"agent_id": ["who"]}},
        },
        {"name": "siem", "type": "stdout", "encoding": "ocsf"},
    ]
    config = write_config(tmp_path / "c.toml", base_config(tmp_path, sinks=sinks))
    body = event_body("evt_1", decision="blocked", who="agent:a")
    code, records, err = _run(monkeypatch, capsys, config, body)
    assert code == 0
    assert [r["metadata"]["version"] for r in records] == ["1.1.0", "1.8.0"]
    assert records[0]["actor"]["invoked_by"] == "agent:a"
    assert records[1]["unmapped"] == {"who": "agent:a"}  # default paths do not read "who"
    for record in records:
        assert_valid(record, record["metadata"]["version"])
    assert "sink lake: OCSF 1.1.0 API Activity (6003)" in err


def test_preview_without_ocsf_sinks_uses_the_defaults_and_reads_json_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No OCSF sink configured: the default mapping; several bodies as JSON lines."""
    config = write_config(tmp_path / "c.toml", base_config(tmp_path))
    bodies = event_body("a", "rule.created") + b"\n" + event_body("b", "x.y") + b"\n"
    code, records, _ = _run(monkeypatch, capsys, config, bodies, "--ocsf-version", "1.7.0")
    assert code == 0
    assert [(r["class_uid"], r["metadata"]["uid"]) for r in records] == [(3004, "a"), (0, "b")]


@pytest.mark.parametrize(
    ("stdin", "args", "code", "message"),
    [
        (b'{"no_type": 1}', (), 1, "invalid_event_type"),
        (b"[1, 2]", (), 1, "invalid_"),
        (b'{"event_type": "rule.x"}', ("--sink", "nope"), 2, "no sink named 'nope'"),
    ],
)
def test_preview_reports_what_ingress_would_refuse(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stdin: bytes,
    args: tuple[str, ...],
    code: int,
    message: str,
) -> None:
    """A body ingress refuses, or an unknown sink, is said on stderr with a failure code."""
    config = write_config(tmp_path / "c.toml", base_config(tmp_path))
    got, records, err = _run(monkeypatch, capsys, config, stdin, *args)
    assert got == code
    assert records == []
    assert message in err
