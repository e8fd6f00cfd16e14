"""Reading a BIGHUB payload by configured paths, and what is left unread. Pure.

Every value the mapper takes is recorded by its path; ``leftovers()`` is the payload
without those values (objects emptied by taking are pruned, objects that were empty
to begin with stay), which becomes OCSF ``unmapped``. A value of the wrong type is
not taken, so it stays in ``leftovers()``: nothing is ever lost.
"""

from __future__ import annotations

import functools
import ipaddress
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["Payload"]

Path = tuple[str, ...]
_MISSING = object()


@functools.lru_cache(maxsize=1024)  # configured paths are few; split each once
def _split(dotted: str) -> Path:
    return tuple(dotted.split("."))


def _utf8(text: str) -> bool:
    # Parsed JSON may hold lone surrogates ("\ud800"); they have no UTF-8 form, so such a
    # string cannot go into a typed field of a Parquet file or a UTF-8 OCSF consumer.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Payload:
    """One payload object and the paths taken from it so far."""

    def __init__(self, root: dict[str, Any], *, max_len: int | None = None) -> None:
        self.root = root
        self.max_len = max_len
        self._taken: set[Path] = set()

    def _at(self, path: Path) -> Any:
        value: Any = self.root
        for name in path:
            # Parsed JSON: objects are dicts (a plain isinstance, not the slow ABC check).
            if not isinstance(value, dict):
                return _MISSING
            value = value.get(name, _MISSING)
            if value is _MISSING:
                return _MISSING
        return value

    def _fits(self, text: str) -> bool:
        if not text or (self.max_len is not None and len(text) > self.max_len):
            return False
        return text.isascii() or _utf8(text)

    def _first(self, paths: Iterable[str], usable: Any) -> tuple[Path, Any] | None:
        for dotted in paths:
            path = _split(dotted)
            value = self._at(path)
            if value is _MISSING:
                continue
            converted = usable(value)
            if converted is not None:
                return path, converted
        return None

    def _take(self, paths: Iterable[str], usable: Any) -> Any:
        found = self._first(paths, usable)
        if found is None:
            return None
        self._taken.add(found[0])
        return found[1]

    def text(self, paths: Sequence[str], *, ids: bool = False) -> str | None:
        """The first non-empty string (with ``ids``: or integer) at ``paths``; taken."""

        def usable(value: Any) -> str | None:
            if ids and isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            return value if isinstance(value, str) and self._fits(value) else None

        result: str | None = self._take(paths, usable)
        return result

    def word(self, paths: Sequence[str], lookup: Mapping[str, str]) -> str | None:
        """The meaning ``lookup`` (lower-case word -> meaning) gives the first string at
        ``paths``; taken. Strings it does not list stay in ``leftovers()``."""

        def usable(value: Any) -> str | None:
            return lookup.get(value.strip().lower()) if isinstance(value, str) else None

        result: str | None = self._take(paths, usable)
        return result

    def number(self, paths: Sequence[str], *, take: bool = True) -> float | None:
        """The first finite number (not a boolean) at ``paths``."""

        def usable(value: Any) -> float | None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return None
            try:
                as_float = float(value)
            except OverflowError:  # a 400-digit integer
                return None
            return as_float if math.isfinite(as_float) else None

        if take:
            taken: float | None = self._take(paths, usable)
            return taken
        found = self._first(paths, usable)
        return None if found is None else float(found[1])

    def ip(self, paths: Sequence[str]) -> str | None:
        """The first valid IPv4 / IPv6 address at ``paths``; taken."""

        def usable(value: Any) -> str | None:
            if not isinstance(value, str) or len(value) > 64:
                return None
            try:
                return str(ipaddress.ip_address(value))
            except ValueError:
                return None

        result: str | None = self._take(paths, usable)
        return result

    def json(self, paths: Sequence[str]) -> Any:
        """The first non-null value of any JSON type at ``paths``; taken whole."""
        return self._take(paths, lambda v: v)

    def take(self, path: Path) -> None:
        self._taken.add(path)

    def leftovers(self) -> dict[str, Any]:
        """The payload without what was taken."""
        if not self._taken:
            return dict(self.root)
        prefixes = {t[:i] for t in self._taken for i in range(1, len(t))}
        return _without(self.root, (), self._taken, prefixes)


def _without(
    value: dict[str, Any], at: Path, taken: set[Path], prefixes: set[Path]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        path = (*at, key)
        if path in taken:
            continue
        if path in prefixes and isinstance(item, dict):
            rest = _without(item, path, taken, prefixes)
            if rest:
                out[key] = rest
            continue
        out[key] = item
    return out
