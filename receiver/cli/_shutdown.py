"""The last resort of a shutdown: end the process when the grace period is spent.

``serve`` abandons sends that outlive the grace period without recording anything, but
a client library may still hold a thread (boto3 in a read, kafka-python in a flush) that
the interpreter would wait for at exit. Nothing acknowledged is lost by ending anyway:
every 2xx was committed before it was sent, and what an abandoned send did not record
goes out again after the restart.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time

import structlog

from receiver.log import flush_logs

__all__ = ["exit_after", "exit_now", "exit_unless_clean"]


def exit_now(code: int, reason: str) -> None:
    structlog.get_logger(component="bighub_siem.serve").warning(reason)
    flush_logs()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def exit_after(seconds: float) -> None:
    """End the process with 0 after ``seconds``, whatever it is doing then."""

    def run() -> None:
        time.sleep(seconds)
        exit_now(0, "shutdown_grace_exceeded")

    threading.Thread(target=run, name="shutdown-watchdog", daemon=True).start()


def exit_unless_clean(code: int) -> int:
    """``code``, or end the process now when abandoned client calls still hold threads
    (the interpreter would otherwise wait for them at exit)."""
    stuck = [t for t in threading.enumerate() if t.is_alive() and not t.daemon]
    if len(stuck) > 1:  # besides the main thread
        exit_now(code, "abandoned_threads_left")
    return code
