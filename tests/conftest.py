"""Shared fixtures. Service fixtures (brokers, S3, PostgreSQL) live in tests/services/."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from receiver.log import flush_logs

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(autouse=True)
def _flush_buffered_logs() -> Iterator[None]:
    """Write out log lines buffered by in-process code while this test's capture is on."""
    yield
    flush_logs()


def require_service(available: bool, what: str, how: str) -> None:
    """Skip when a service is missing locally; fail under CI, where it must be there."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true but is not available: {how}")
    pytest.skip(f"{what} not available ({how})")


def require_tool(command: str, how: str) -> str:
    """The path of ``command``; skips (fails under CI) when it is not installed."""
    path = shutil.which(command)
    require_service(path is not None, command, how)
    assert path is not None
    return path
