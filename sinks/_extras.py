"""Optional dependencies: the error a configuration meets when an extra is not installed.

bighub-siem is installed from a checkout or a built wheel (it is not on a package
index), so the install hint names both ways. ``MissingExtraError`` is a ``ValueError``
so config validators can raise it: pydantic keeps the instance in the error's context,
and the CLI recognises it there and exits with its own code instead of "invalid".
"""

from __future__ import annotations

import importlib.util

__all__ = ["MissingExtraError", "install_hint", "require"]


def install_hint(*extras: str) -> str:
    """How to add ``extras`` to an installation (a checkout or a wheel)."""
    spec = ",".join(sorted(set(extras)))
    return (
        f"pip install -e '.[{spec}]' in a checkout,"
        f" or pip install 'bighub_siem-<version>-py3-none-any.whl[{spec}]'"
    )


class MissingExtraError(ValueError):
    """``package`` (brought by the ``extra`` extra) is needed by ``what`` but not installed."""

    def __init__(self, *, extra: str, package: str, what: str) -> None:
        self.extra = extra
        self.package = package
        self.what = what
        super().__init__(
            f"{what} needs {package}, which is not installed (the {extra!r} extra: "
            f"{install_hint(extra)})"
        )


def require(module: str, *, extra: str, package: str, what: str) -> None:
    """Raise ``MissingExtraError`` unless ``module`` can be imported (without importing it).

    Raises:
        MissingExtraError: ``module`` is not installed.
    """
    if importlib.util.find_spec(module) is None:
        raise MissingExtraError(extra=extra, package=package, what=what)
