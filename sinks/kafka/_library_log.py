"""kafka-python's log records: kept at debug in our log, and read while connecting.

Only the standard ``logging`` module is used here; the "kafka" logger is kafka-python's.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

import structlog

__all__ = ["LIBRARY_LOG", "LibraryLog", "route_library_logs"]

log = structlog.get_logger("bighub_siem.sink.kafka")


class LibraryLog(logging.Handler):
    """kafka-python's log records, re-logged by us at debug; and, per thread, the
    exceptions its records carry while that thread is connecting.

    kafka-python reports a refused login only in its log (the constructor then times
    out bootstrapping), so the connect watches the records of its own thread to name
    the reason. Its lines would otherwise repeat at ERROR on every attempt; our own
    log lines say what happened, so the library's are kept for debugging.
    """

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._watches: dict[int, list[BaseException]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a library record with broken arguments must not break us
            message = str(record.msg)
        log.debug(
            "kafka_library_log", logger=record.name, level=record.levelname, message=message[:300]
        )
        seen = self._watches.get(record.thread or 0)
        if seen is not None and isinstance(record.args, tuple):
            seen.extend(a for a in record.args if isinstance(a, BaseException))

    @contextlib.contextmanager
    def watching(self) -> Iterator[list[BaseException]]:
        """Collect the exceptions logged by the library on this thread meanwhile."""
        ident = threading.get_ident()
        seen: list[BaseException] = []
        self._watches[ident] = seen
        try:
            yield seen
        finally:
            self._watches.pop(ident, None)


# One handler for the process: the "kafka" logger is global, like logging itself.
LIBRARY_LOG = LibraryLog()


def route_library_logs() -> None:
    """Send kafka-python's records to our log at debug, never below INFO.

    At DEBUG kafka-python logs every record's key and value and its own settings
    (with the SASL password): its logger is never set below INFO.
    """
    logger = logging.getLogger("kafka")
    if LIBRARY_LOG not in logger.handlers:
        logger.addHandler(LIBRARY_LOG)
    logger.propagate = False
    if logger.level < logging.INFO:  # NOTSET included
        logger.setLevel(logging.INFO)
