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


def test_module_loggers_never_write_to_stdout() -> None:
    """Loggers created at import time follow configure_logging: stderr, never stdout."""
    import subprocess
    import sys

    code = (
        "import receiver.webhook as e, receiver.dispatcher as d;"
        "from receiver.log import configure_logging, flush_logs;"
        "from receiver.settings import LogSettings;"
        "configure_logging(LogSettings(format='json'));"
        "e.log.info('probe_line'); d.log.warning('probe_warning'); flush_logs()"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""
    assert '"event": "probe_line"' in out.stderr
    assert '"component": "bighub_siem.ingress"' in out.stderr
