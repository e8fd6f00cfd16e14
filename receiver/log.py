"""Logging: structlog, JSON lines to stderr (console rendering on a TTY).

stdout belongs to the stdout sink, so nothing here ever writes there. Log calls
pass ids and counts, never bodies, secrets, tokens or signatures.

Our own log calls use structlog's native filtering logger (cheap on the request
path: a filtered call returns at once); the standard library's records (uvicorn)
are rendered by the same processors through a handler. The one line per request
(``request_line``) is built by hand when the output is JSON: the same keys as
structlog's renderer writes, at a fraction of the processor chain's cost.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import sys
import threading
import time
from datetime import datetime, timezone
from json.encoder import encode_basestring_ascii
from typing import Any, BinaryIO

import structlog

from receiver.settings import LogSettings

__all__ = ["StderrLogger", "configure_logging", "flush_logs", "request_line"]

# Keys that must never reach a log line, whatever a caller passes by mistake.
_REDACT = frozenset({"secret", "secrets", "token", "signature", "authorization", "body", "api_key"})


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in _REDACT.intersection(event):
        event[key] = "[redacted]"
    return event


class StderrLogger:
    """structlog's final logger: lines to a buffered stderr.

    Info and debug lines are buffered (flushed by ``flush_logs()``, which ``serve``
    calls every 250 ms, when the buffer fills, and at exit): a write syscall per
    request line cost a quarter of the request path's CPU. Warnings and errors are
    flushed at once, so what matters for an incident is never held back.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def _write(self, message: str, flush: bool) -> None:
        data = message.encode("utf-8", "replace") + b"\n"
        with self._lock:
            self._stream.write(data)
            if flush:
                self._stream.flush()

    def debug(self, message: str) -> None:
        self._write(message, False)

    info = debug

    def warning(self, message: str) -> None:
        self._write(message, True)

    warn = error = critical = exception = fatal = msg = warning

    def flush(self) -> None:
        with self._lock:
            self._stream.flush()


_STDERR = StderrLogger(io.BufferedWriter(io.FileIO(2, "wb", closefd=False), buffer_size=64 * 1024))
atexit.register(_STDERR.flush)


def flush_logs() -> None:
    """Write out buffered log lines."""
    # stderr closed: nothing we can do, and logging must never fail a request.
    with contextlib.suppress(OSError, ValueError):
        _STDERR.flush()


Field = str | int | float | bool | None


class _RequestLines:
    """Hand-built JSON request lines, used while our JSON configuration is in force.

    Under the console renderer, or while a test captures logs (``capture_logs``
    replaces the processors), lines go through structlog like any other call.
    """

    def __init__(self) -> None:
        self.renderer: object | None = None  # our JSONRenderer, when the format is JSON
        self.level = logging.INFO
        self._second = -1
        self._prefix = ""

    def fast(self) -> bool:
        processors = structlog.get_config()["processors"]
        return self.renderer is not None and bool(processors) and processors[-1] is self.renderer

    def timestamp(self) -> str:
        # structlog's TimeStamper(fmt="iso", utc=True) format; the date part changes once a second.
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            moment = datetime.fromtimestamp(second, tz=timezone.utc)
            self._prefix = moment.strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{int((now - second) * 1e6):06d}Z"

    def write(self, event: str, level: str, fields: dict[str, Field]) -> None:
        if _LEVELS[level] < self.level:
            return
        if not self.fast():
            getattr(structlog.get_logger(), level)(event, **fields)
            return
        parts = [f'{{"event":"{event}","level":"{level}","timestamp":"{self.timestamp()}"']
        for key, value in fields.items():
            encode = _ENCODE.get(type(value))
            parts.append(f',"{key}":{encode(value) if encode else _value(value)}')
        parts.append("}")
        line = "".join(parts)
        if level in ("debug", "info"):
            _STDERR.info(line)
        else:
            _STDERR.warning(line)


def _value(value: Field) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return encode_basestring_ascii(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


# By exact type, the common case: one dict lookup instead of a chain of isinstance checks
# (subclasses, such as a str enum, take ``_value``).
_ENCODE: dict[type, Any] = {
    str: encode_basestring_ascii,
    int: repr,
    float: repr,
    bool: lambda v: "true" if v else "false",
    type(None): lambda v: "null",
}
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LINES = _RequestLines()


def request_line(event: str, level: str = "info", /, **fields: Field) -> None:
    """One request's line. Keys are fixed names chosen by the caller; values are ids,
    codes, counts and durations, never bodies, secrets, tokens or signatures.

    Args:
        event: the line's ``event`` (``webhook``, ``http``, ``edge_refused``).
        level: ``debug``, ``info`` or ``warning``.
    """
    _LINES.write(event, level, fields)


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
    _LINES.renderer = None if console else renderer
    _LINES.level = level
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *args: _STDERR,
        # Not cached: module-level loggers must follow a later configure() (and tests'
        # capture_logs()); resolving the configuration per call costs about a microsecond.
        cache_logger_on_first_use=False,
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
    # Client libraries log every request at info (with URLs); keep only their warnings.
    for name in ("httpx", "httpcore", "botocore", "kafka", "urllib3", "azure", "msal"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
