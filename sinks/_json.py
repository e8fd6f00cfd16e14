"""Reading a stored body as Python values, fast, for the few fields a sink needs from it.

Never used to write a payload back out: every sink exports the body verbatim.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["read_body"]

# orjson reads an integer beyond 64 bits as a float (an id of 30 digits would come back
# rounded, "1.2345678901234568e+29"); a number of 19 digits or more (it can pass 2**63)
# sends the body to the standard library, which keeps every integer exact. A number
# starts after ':', ',' or '[' (whitespace and a minus between). The check maps those
# three to ':', digits to '0' and the rest to 'x', drops whitespace and '-', and looks
# for ':' and 19 zeros: two C passes, a quarter of a regex search's cost on a typical
# body. Digits inside a string can match too (a session id after "x:"); such a body
# only takes the slower reader.
_CLASSES = bytes(
    ord("0") if c in b"0123456789" else ord(":") if c in b":,[" else ord("x") for c in range(256)
)
_DROPPED = b" \t\r\n-"
_LONG_NUMBER = b":" + b"0" * 19


def read_body(body: bytes) -> Any:
    """The body parsed (orjson; the standard library for what orjson refuses).

    Raises:
        ValueError: not JSON.
    """
    if _LONG_NUMBER in body.translate(_CLASSES, _DROPPED):
        return json.loads(body)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        # orjson refuses lone surrogate escapes and numbers beyond double range,
        # which are valid JSON text: the standard library reads them.
        return json.loads(body)
