"""How a command ends when it cannot do its job: a short message and a documented exit code.

Every failure an operator fixes from outside the program (the configuration, the
installation, the spool's directory, the database, a busy port) ends in one line
that names the setting and says what is wrong, and at most one more line saying what
to do; never a traceback. The exit codes (docs/operations.md, "Exit codes"):

    0    success
    1    the command ran and found a failure (a refused test event, archive
         findings, replay errors)
    2    usage or configuration: a bad option, no or an invalid configuration,
         a secret reference that cannot be resolved
    3    an optional dependency the configuration needs is not installed
    4    the store cannot be opened: spool directory missing or not writable,
         spool in use by another serve process, database unreachable
    5    a listener cannot bind (ingress / admin host or port)
    130  interrupted

Codes 2 and 3 do not go away by restarting; the systemd unit lists them in
``RestartPreventExitStatus``. Codes 4 and 5 may (a database coming up, a port freed).
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence
from enum import IntEnum
from pathlib import Path
from urllib.parse import urlsplit

from receiver.errors import ConfigError
from receiver.settings import StoreSettings
from sinks._extras import MissingExtraError, install_hint

__all__ = [
    "CommandError",
    "ExitCode",
    "config_failure",
    "listener_unavailable",
    "missing_extras",
    "no_config",
    "no_spool",
    "report",
    "store_unavailable",
]

PROG = "bighub-siem"


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    CONFIG = 2
    MISSING_EXTRA = 3
    STORE = 4
    LISTENER = 5
    INTERRUPTED = 130


class CommandError(Exception):
    """A command cannot go on: ``lines`` are printed to stderr, ``code`` is the exit code."""

    def __init__(self, code: ExitCode, message: str, *details: str) -> None:
        self.code = code
        self.lines = [message, *details]
        super().__init__(message)


def report(err: CommandError) -> int:
    """Print ``err`` (first line prefixed with the program name) and return its code."""
    first, *rest = err.lines
    print(f"{PROG}: {first}", file=sys.stderr)
    for line in rest:
        print(f"  {line}", file=sys.stderr)
    return int(err.code)


def no_config(alternative: str = "") -> CommandError:
    return CommandError(
        ExitCode.CONFIG,
        "no configuration given; pass --config FILE or set BIGHUB_SIEM_CONFIG" + alternative,
    )


def config_failure(exc: ConfigError) -> CommandError:
    """Invalid settings (code 2), or only missing optional dependencies (code 3)."""
    if exc.missing and len(exc.missing) == len(exc.problems):
        return missing_extras(exc.missing)
    return CommandError(ExitCode.CONFIG, "configuration is invalid:", *exc.problems)


def missing_extras(missing: Sequence[tuple[str, MissingExtraError]]) -> CommandError:
    """Packages the configuration (at ``key``) needs are not installed (code 3)."""
    what = "; ".join(f"{key}: {err.what} needs {err.package}" for key, err in missing)
    extras = {err.extra for _, err in missing}
    names = ", ".join(repr(e) for e in sorted(extras))
    return CommandError(
        ExitCode.MISSING_EXTRA,
        f"{what}; not installed (extra {names})",
        f"install with: {install_hint(*extras)}",
    )


def _where(settings: StoreSettings) -> str:
    if settings.url.startswith("sqlite:///"):
        return f"the SQLite spool {Path(settings.url[len('sqlite:///') :])}"
    parts = urlsplit(settings.url)  # never echo user:password@ from the URL
    return f"PostgreSQL at {parts.hostname}:{parts.port or 5432}{parts.path}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({exc.filename})" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def store_unavailable(settings: StoreSettings, exc: BaseException) -> CommandError:
    """The store could not be opened (code 4); the hint depends on the backend."""
    message = f"store.url: cannot open {_where(settings)}: {_reason(exc)}"
    if not settings.url.startswith("sqlite:///"):
        return CommandError(
            ExitCode.STORE,
            message,
            "check that PostgreSQL runs and accepts connections there, and store.url /"
            " store.password",
        )
    if "in use by another serve process" in str(exc):
        return CommandError(
            ExitCode.STORE,
            message,
            "one serve process owns a SQLite spool: stop the other one, or give this one"
            " its own store.url",
        )
    directory = Path(settings.url[len("sqlite:///") :]).parent
    return CommandError(
        ExitCode.STORE,
        message,
        f"create {directory} and make it writable by uid {os.getuid()} (this process),"
        " or set store.url to a writable place",
    )


def no_spool(path: Path) -> CommandError:
    return CommandError(
        ExitCode.STORE,
        f"store.url: no spool at {path} (serve creates it)",
        "is --config the file serve runs with? A relative sqlite:/// path is relative"
        " to the config file's directory",
    )


def listener_unavailable(section: str, host: str, port: int, exc: OSError) -> CommandError:
    """``[ingress]`` or ``[admin]`` cannot bind ``host:port`` (code 5)."""
    env = f"BIGHUB_SIEM_{section.upper()}__PORT"
    if exc.errno == errno.EADDRINUSE:
        return CommandError(
            ExitCode.LISTENER,
            f"{section}.port: {host}:{port} is already in use",
            f"stop the process listening there, or set {section}.port ({env}) to a free port",
        )
    if exc.errno == errno.EACCES:
        return CommandError(
            ExitCode.LISTENER,
            f"{section}.port: binding {host}:{port} is not permitted",
            "ports below 1024 need privileges: use a higher port and map it in front",
        )
    return CommandError(
        ExitCode.LISTENER,
        f"{section}.host: cannot listen on {host}:{port}: {_reason(exc)}",
        f"set {section}.host to an address of this machine (0.0.0.0 for all)",
    )
