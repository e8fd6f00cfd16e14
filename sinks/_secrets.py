"""Secret references for sink settings: ``env:NAME``, ``file:PATH`` or a literal.

Sinks never import ``receiver``, so they resolve references here. The value ends as
a ``SecretStr``; error messages name the reference, never the secret.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, SecretStr

__all__ = ["SecretRef", "resolve_secret"]


def resolve_secret(value: object) -> object:
    """``env:NAME`` / ``file:PATH`` -> ``SecretStr``; other strings are literals.

    Non-strings are passed through for pydantic to reject with its own message.
    """
    if not isinstance(value, str):
        return value
    if value.startswith("env:"):
        name = value[4:]
        if not name:
            raise ValueError("empty environment variable name in 'env:' reference")
        if name not in os.environ:
            raise ValueError(f"secret reference env:{name}: environment variable is not set")
        return SecretStr(os.environ[name])
    if value.startswith("file:"):
        path = Path(value[5:])
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"secret reference file:{path}: cannot read ({type(exc).__name__})"
            ) from None
        # Files written by `echo` or editors end in a newline that is not part of the secret.
        return SecretStr(text.rstrip("\r\n"))
    return SecretStr(value)


SecretRef = Annotated[SecretStr, BeforeValidator(resolve_secret)]
