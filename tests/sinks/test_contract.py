"""One contract every registered sink type meets, and the sinks -> receiver boundary."""

from __future__ import annotations

import ast
import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from sinks import Sink, SinkConfig, build_sink, sink_types

ROOT = Path(__file__).resolve().parents[2]
if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def example_sink_configs() -> dict[str, dict[str, Any]]:
    """One example [[sinks]] table per type, from deploy/examples/*.toml."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((ROOT / "deploy" / "examples").glob("*.toml")):
        for table in tomllib.loads(path.read_text()).get("sinks", []):
            found.setdefault(table["type"], table)
    return found


TYPES = sorted(sink_types())


def _fake_secret(var: str) -> str:
    if "SIGNING" in var:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return (
            Ed25519PrivateKey.generate()
            .private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            .decode()
        )
    return "x" * 32


@pytest.mark.parametrize("name", TYPES)
def test_config_model_contract(name: str) -> None:
    """The config model is a SinkConfig whose type literal is the registered name; every field documented."""
    cls = sink_types()[name]
    model = cls.config_model
    assert issubclass(model, SinkConfig)
    assert model.model_config.get("extra") == "forbid"
    assert model.model_fields["type"].annotation.__args__ == (name,)  # type: ignore[union-attr]
    undocumented = [f for f, info in model.model_fields.items() if not info.description]
    assert not undocumented, f"{name}: fields without description: {undocumented}"


@pytest.mark.parametrize("name", TYPES)
def test_every_type_has_an_example_that_builds_without_io(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deploy/examples has a config for each sink type; building it does no I/O; close() twice is safe."""
    examples = example_sink_configs()
    assert name in examples, f"add a deploy/examples/*.toml with a {name} sink"
    # Every env: reference of the example resolves to something; keys that must parse
    # (an Ed25519 signing key) get a real one.
    for var in sorted(set(re.findall(r"env:([A-Z0-9_]+)", repr(examples[name])))):
        monkeypatch.setenv(var, _fake_secret(var))
    config = sink_types()[name].config_model.model_validate(examples[name])
    sink = build_sink(config)
    assert isinstance(sink, Sink)

    async def close_twice() -> None:
        await sink.close()
        await sink.close()

    asyncio.run(close_twice())


def test_sinks_never_import_receiver() -> None:
    """Dependencies point receiver -> sinks only."""
    offenders = []
    for path in (ROOT / "sinks").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [
                f"{path}: {n}" for n in names if n == "receiver" or n.startswith("receiver.")
            ]
    assert not offenders
