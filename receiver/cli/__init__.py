"""``bighub-siem`` (and ``python -m receiver``): serve, check-config, send-test, replay,
dead-letters, retire-sink, migrate, verify-archive, ocsf preview, config-reference.

One module per command (or small group of commands), each with a ``register(sub)``
that adds its subparser; this module only assembles them. Failures end in a short
message and an exit code, both in ``_errors`` (0 success, 1 the command found a
failure, 2 usage or configuration, 3 missing extra, 4 store, 5 listener, 130 interrupted).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from receiver.cli import (
    _check_config,
    _config_reference,
    _ocsf,
    _replay,
    _send_test,
    _serve,
    _store_cmds,
    _verify_archive,
)
from receiver.cli._common import CONFIG_ENV
from receiver.cli._errors import CommandError, ExitCode, config_failure, report
from receiver.errors import ConfigError
from receiver.log import flush_logs

__all__ = ["CONFIG_ENV", "main"]

_COMMANDS = (
    _serve,
    _store_cmds,
    _check_config,
    _send_test,
    _replay,
    _verify_archive,
    _ocsf,
    _config_reference,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bighub-siem", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for command in _COMMANDS:
        command.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from receiver.log import configure_logging
    from receiver.settings import LogSettings

    # Defaults until serve reads the configured level/format; logs never touch stdout.
    configure_logging(LogSettings())
    try:
        return int(args.func(args))
    except CommandError as exc:
        return report(exc)
    except ConfigError as exc:
        return report(config_failure(exc))
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)
    finally:
        flush_logs()
