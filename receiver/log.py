"""Logging: structlog, JSON lines to stderr (console rendering on a TTY).

stdout belongs to the stdout sink, so nothing here ever writes there. Log calls
pass ids and counts, never bodies, secrets, tokens or signatures.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from receiver.settings import LogSettings

__all__ = ["configure_logging"]

# Keys that must never reach a log line, whatever a caller passes by mistake.
_REDACT = frozenset({"secret", "secrets", "token", "signature", "authorization", "body", "api_key"})


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in _REDACT.intersection(event):
        event[key] = "[redacted]"
    return event


def configure_logging(settings: LogSettings) -> None:
    """Set up structlog and the standard library's logging (uvicorn) once."""
    console = settings.format == "console" or (settings.format == "auto" and sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # Our own request line replaces uvicorn's access log (which would log query strings).
    logging.getLogger("uvicorn.access").disabled = True
