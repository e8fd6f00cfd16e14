"""``read_body`` (orjson with the standard library behind it) reads every body exactly as
``json.loads`` does: same values, same types, integers of any size exact."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from sinks._json import read_body

scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: past 2**64 too
    | st.floats(allow_nan=False, allow_infinity=False)  # not JSON; 1e400 is tested below
    | st.text()  # lone surrogates included, escaped by json.dumps
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


def same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


@given(st.dictionaries(st.text(), values, max_size=8))
def test_reads_like_the_standard_library(payload: dict[str, Any]) -> None:
    body = json.dumps(payload, allow_nan=False).encode()
    assert same(read_body(body), json.loads(body))


def test_long_integers_stay_exact() -> None:
    parsed = read_body(b'{"rule_id":123456789012345678901234567890,"n":-9223372036854775809}')
    assert parsed["rule_id"] == 123456789012345678901234567890
    assert parsed["n"] == -9223372036854775809
    listed = read_body(b'{"ids":[1, \n 12345678901234567890123]}')
    assert listed["ids"][1] == 12345678901234567890123
    # Valid JSON text orjson refuses; only an export must never re-encode it.
    assert read_body(b'{"x":1e400}')["x"] == math.inf
