"""Reading a stored body as Python values, fast, for the few fields a sink needs from it.

Never used to write a payload back out: every sink exports the body verbatim.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

__all__ = ["read_body"]

# orjson reads an integer beyond 64 bits as a float (an id of 30 digits would come back
# rounded, "1.2345678901234568e+29"); a number of 19 digits or more (it can pass 2**63)
# sends the body to the standard library, which keeps every integer exact. A number
# starts after ':', ',' or '['; digits inside a string (a session id) rarely do, and
# when they do the body only takes the slower reader.
_LONG_DIGITS = re.compile(rb"[:,\[][ \t\r\n]*-?[0-9]{19}")


def read_body(body: bytes) -> Any:
    """The body parsed (orjson; the standard library for what orjson refuses).

    Raises:
        ValueError: not JSON.
    """
    if _LONG_DIGITS.search(body):
        return json.loads(body)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        # orjson refuses lone surrogate escapes and numbers beyond double range,
        # which are valid JSON text: the standard library reads them.
        return json.loads(body)
