"""The README stays true to the code: every setting and every sink type is documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from receiver.settings import (
    AdminSettings,
    IngressSettings,
    LogSettings,
    ServeSettings,
    StoreSettings,
    UpstreamSettings,
)
from sinks import SinkConfig, sink_types

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.parametrize(
    "model",
    [
        IngressSettings,
        StoreSettings,
        ServeSettings,
        AdminSettings,
        LogSettings,
        UpstreamSettings,
        SinkConfig,
    ],
)
def test_every_setting_in_readme(model: type) -> None:
    """Each configuration key appears in the README's configuration reference."""
    missing = [k for k in model.model_fields if f"| `{k}` |" not in README]  # type: ignore[attr-defined]
    assert not missing, f"{model.__name__}: undocumented keys {missing}"


def test_every_sink_type_in_readme() -> None:
    """Each registered sink type is named in the README."""
    missing = [t for t in sink_types() if f'type = "{t}"' not in README]
    assert not missing
