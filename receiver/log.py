"""Logging: structlog, JSON lines to stderr (console rendering on a TTY).

stdout belongs to the stdout sink, so nothing here ever writes there. Log calls
pass ids and counts, never bodies, secrets, tokens or signatures.

Our own log calls use structlog's native filtering logger (cheap on the request
path: a filtered call returns at once); the standard library's records (uvicorn)
are rendered by the same processors through a handler.
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
    level = logging.getLevelName(settings.level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # Our own request line replaces uvicorn's access log (which would log query strings).
    logging.getLogger("uvicorn.access").disabled = True
