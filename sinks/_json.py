"""Reading a stored body as Python values, fast, for the few fields a sink needs from it.

Never used to write a payload back out: every sink exports the body verbatim.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["read_body"]


def read_body(body: bytes) -> Any:
    """The body parsed (orjson; the standard library for what orjson refuses).

    Raises:
        ValueError: not JSON.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        # orjson refuses lone surrogate escapes and numbers beyond double range,
        # which are valid JSON text: the standard library reads them.
        return json.loads(body)
