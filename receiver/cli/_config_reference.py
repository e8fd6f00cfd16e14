"""``config-reference``: every configuration key, from the settings models, as Markdown."""

from __future__ import annotations

import argparse
from pathlib import Path

from receiver.cli._errors import CommandError, ExitCode

__all__ = ["register"]


def cmd_config_reference(args: argparse.Namespace) -> int:
    from receiver.config_reference import reference, splice

    text = reference()
    if args.update is None:
        print(text, end="")
        return 0
    path = Path(args.update)
    try:
        path.write_text(splice(path.read_text(encoding="utf-8"), text), encoding="utf-8")
    except (OSError, ValueError) as exc:  # no such file, or no generated block in it
        raise CommandError(ExitCode.CONFIG, f"--update {path}: {exc}") from None
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cr = sub.add_parser(
        "config-reference",
        help="print every configuration key (sections and installed sink types) as Markdown",
    )
    cr.add_argument(
        "--update",
        metavar="FILE",
        help="rewrite the generated block of FILE instead (make docs: docs/configuration.md)",
    )
    cr.set_defaults(func=cmd_config_reference)
