"""Logging: redaction and where lines go."""

from __future__ import annotations

import io

import structlog
from structlog.testing import capture_logs

from receiver.log import StderrLogger, _redact


def test_redacts_sensitive_keys() -> None:
    """Keys that could hold secrets are replaced whatever a caller passes."""
    event = {"event": "x", "token": "t0ps3cret", "signature": "v1=abc", "body": b"{}", "sink": "s"}
    out = _redact(None, "info", dict(event))
    assert out["token"] == out["signature"] == out["body"] == "[redacted]"
    assert out["sink"] == "s"


def test_info_buffered_warning_flushed() -> None:
    """Info lines wait for a flush; warnings are written through at once."""

    class Sink(io.BytesIO):
        flushes = 0

        def flush(self) -> None:
            Sink.flushes += 1

    stream = Sink()
    logger = StderrLogger(stream)  # type: ignore[arg-type]
    logger.info("a")
    assert Sink.flushes == 0
    logger.warning("b")
    assert Sink.flushes == 1
    assert stream.getvalue() == b"a\nb\n"


def test_capture_logs_of_a_delivery_attempt() -> None:
    """Log calls carry ids and counts (checked with structlog's capture_logs)."""
    with capture_logs() as logs:
        structlog.get_logger().bind(component="t").info("delivery_attempt", sink="s", events=3)
    assert logs == [
        {
            "component": "t",
            "sink": "s",
            "events": 3,
            "event": "delivery_attempt",
            "log_level": "info",
        }
    ]
