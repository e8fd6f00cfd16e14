"""``bighub-siem`` (and ``python -m receiver``): serve, check-config, send-test, replay,
dead-letters, migrate, verify-archive, ocsf preview.

One module per command (or small group of commands), each with a ``register(sub)``
that adds its subparser; this module only assembles them and maps errors to exit codes.

Exit codes: 0 success, 1 the command ran and found a failure, 2 bad usage or config.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from receiver.cli import (
    _check_config,
    _ocsf,
    _replay,
    _send_test,
    _serve,
    _store_cmds,
    _verify_archive,
)
from receiver.cli._common import CONFIG_ENV
from receiver.errors import ConfigError
from receiver.log import flush_logs

__all__ = ["CONFIG_ENV", "main"]

_COMMANDS = (_serve, _store_cmds, _check_config, _send_test, _replay, _verify_archive, _ocsf)


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
    except ConfigError as exc:
        print("bighub-siem: configuration is invalid:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        flush_logs()
