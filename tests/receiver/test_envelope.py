"""Envelope parsing: where ids, types and times come from, and what is refused."""

from __future__ import annotations

import contextlib
import hashlib
import json
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.envelope import category_of, parse_envelope
from receiver.errors import EnvelopeError

NAMES = {
    "event_id": "x-bighub-event-id",
    "event_type": "x-bighub-event",
    "delivery_id": "x-bighub-delivery-id",
}


def parse(obj: object, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return parse_envelope(body, headers or {}, NAMES)


def test_body_event_id_wins() -> None:
    """event_id in the body is preferred over id and the header."""
    env = parse({"event_id": "a", "id": "b", "event_type": "rule.x"}, {"x-bighub-event-id": "c"})
    assert (env.event_id, env.id_origin) == ("a", "body.event_id")


def test_id_then_header_then_hash() -> None:
    """Fallbacks: body id, then the header, then the SHA-256 of the raw body."""
    assert parse({"id": 42, "type": "rule.x"}).event_id == "42"
    env = parse({"type": "rule.x"}, {"x-bighub-event-id": "hdr-1"})
    assert (env.event_id, env.id_origin) == ("hdr-1", "header")
    raw = b'{"type":"rule.x"}'
    env = parse(raw)
    assert (env.event_id, env.id_origin) == (hashlib.sha256(raw).hexdigest(), "sha256")


def test_type_sources_and_categories() -> None:
    """Type from event_type, type, or the header; category from its prefix."""
    assert parse({"event_type": "decision_event.created"}).category == "decision"
    assert parse({"type": "rule.patch_applied"}).category == "rule"
    assert parse({}, {"x-bighub-event": "approval.created"}).category == "approval"
    assert parse({"type": "signal.new"}).category == "other"
    assert category_of("decision_eventx.created") == "other"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-24T08:00:00Z", "2026-11-24T08:00:00.000+00:00"),
        ("2026-11-24T10:00:00+02:00", "2026-11-24T08:00:00.000+00:00"),
        (1_795_500_000, "2026-11-24T06:00:00.000+00:00"),
        (1_795_500_000_123, "2026-11-24T06:00:00.123+00:00"),
        ("yesterday", None),
        (True, None),
        (int("1" * 400), None),
        ("0001-01-01T00:00:00+14:00", None),
        ("9999-12-31T23:59:59-14:00", None),
    ],
)
def test_occurred_at(value: object, expected: str | None) -> None:
    """ISO 8601 and epoch (s or ms) times normalise to UTC; junk is tolerated as None."""
    assert parse({"type": "rule.x", "created_at": value}).occurred_at == expected


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"[1,2]", "invalid_envelope"),
        (b"null", "invalid_envelope"),
        (b"not json", "invalid_json"),
        (b"\xff\xfe{}", "invalid_json"),
        (b'{"type": NaN}', "invalid_json"),
        (b"{}", "invalid_event_type"),
        (b'{"type": 5}', "invalid_event_type"),
        (b'{"type": "bad type with spaces"}', "invalid_event_type"),
        (b'{"type": "rule.x", "event_id": ""}', "invalid_event_id"),
        (b'{"type": "rule.x", "event_id": "a\\nb"}', "invalid_event_id"),
        (b'{"type": "rule.x", "event_id": {"x": 1}}', "invalid_event_id"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid_json"),
    ],
)
def test_refused(body: bytes, code: str) -> None:
    """Bodies that are not a usable event are refused with a stable code."""
    with pytest.raises(EnvelopeError) as err:
        parse(body)
    assert err.value.code == code


@given(
    st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=64))
)
def test_arbitrary_times_never_raise(value: object) -> None:
    """Any JSON number or string as created_at parses or is ignored, never raises."""
    parse({"type": "rule.x", "created_at": value})


@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_envelope_errors(body: bytes) -> None:
    """Any bytes give an Envelope or an EnvelopeError, never another exception."""
    try:
        env = parse(body)
    except EnvelopeError:
        return
    assert env.event_id
    assert env.event_type


@given(
    st.dictionaries(
        st.text(max_size=10),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats(allow_nan=False)
            | st.text(max_size=20),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
            max_leaves=10,
        ),
    )
)
def test_arbitrary_objects(obj: dict[str, object]) -> None:
    """Arbitrary JSON objects give an Envelope or an EnvelopeError."""
    with contextlib.suppress(EnvelopeError):
        parse(obj)


@pytest.mark.parametrize("event_id", ["x", " x", "x ", "x\u2028y", "x y", "é-1", "ID-1"])
def test_ids_are_kept_byte_for_byte(event_id: str) -> None:
    """Printable ids are used exactly as sent: nothing is trimmed or folded."""
    if not event_id.isprintable():
        with pytest.raises(EnvelopeError) as err:
            parse({"event_id": event_id, "type": "rule.x"})
        assert err.value.code == "invalid_event_id"
        return
    assert parse({"event_id": event_id, "type": "rule.x"}).event_id == event_id


@pytest.mark.parametrize(
    "event_id",
    [
        "x\u2028",  # line separator: str.strip() used to fold it into "x"
        "x\u2029",
        "\u00a0x",  # no-break space
        "x\t",
        "x\n",
        "x\x00",
        "x\x7f",
        "x\x85",  # C1 next line
        "x\u202e",  # right-to-left override: forges what a log line shows
        "x\u200b",  # zero-width space
        "",
        "y" * 257,
    ],
)
def test_ids_with_control_format_or_separator_characters_are_refused(event_id: str) -> None:
    """An id that is empty, too long or not printable is a 400 invalid_event_id."""
    for source, headers in (
        ({"event_id": event_id, "type": "rule.x"}, None),
        ({"id": event_id, "type": "rule.x"}, None),
    ):
        with pytest.raises(EnvelopeError) as err:
            parse(source, headers)
        assert err.value.code == "invalid_event_id"


def test_x_and_x_with_line_separator_are_not_the_same_event() -> None:
    """The bug of issue 11: "x\\u2028" was trimmed to "x"; now it is refused instead."""
    assert parse({"event_id": "x", "type": "rule.x"}).event_id == "x"
    with pytest.raises(EnvelopeError):
        parse({"event_id": "x\u2028", "type": "rule.x"})


def test_integer_ids_and_their_bounds() -> None:
    """Integer ids are their decimal text; one longer than 256 digits is refused."""
    assert parse({"id": 10**255, "type": "rule.x"}).event_id == str(10**255)
    with pytest.raises(EnvelopeError):
        parse(b'{"id": ' + b"9" * 257 + b', "type": "rule.x"}')


@given(st.text(min_size=1, max_size=40))
def test_any_id_is_kept_exactly_or_refused(event_id: str) -> None:
    """For any text: the id is that exact text, or the event is refused - never altered."""
    if event_id.isprintable():
        assert parse({"event_id": event_id, "type": "rule.x"}).event_id == event_id
    else:
        with pytest.raises(EnvelopeError) as err:
            parse({"event_id": event_id, "type": "rule.x"})
        assert err.value.code == "invalid_event_id"


_ENVELOPE_KEYS = ("event_id", "id", "event_type", "type", "created_at", "timestamp", "occurred_at")
_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**70)
    | st.integers(min_value=-(2**70), max_value=-(2**63) + 2)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["rule.x", "decision_event.created", "2026-11-24T08:00:00Z"]),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)


@given(st.dictionaries(st.sampled_from(_ENVELOPE_KEYS), _JSON_VALUES))
def test_same_envelope_as_the_standard_decoder(obj: dict[str, object]) -> None:
    """The fast decoder yields what the standard library's would, big integers included."""
    body = json.dumps(obj).encode()
    # A lone surrogate escape in an extra key: orjson refuses it, so this copy is read by
    # the standard decoder alone; the envelope ignores the key.
    standard = json.dumps({**obj, "\ud800": 0}).encode()

    def outcome(raw: bytes) -> object:
        try:
            env = parse_envelope(raw, {}, NAMES)
        except EnvelopeError as exc:
            return exc.code
        if env.id_origin == "sha256":  # the hash of the body, which differs by design
            return env.event_type, env.occurred_at, env.category
        return env

    assert outcome(body) == outcome(standard)


@given(
    st.datetimes(),
    st.sampled_from(["seconds", "milliseconds", "microseconds"]),
)
def test_utc_z_times_read_as_their_offset_form(moment: datetime, spec: str) -> None:
    """...Z (the fast path) gives what the same time with +00:00 gives."""
    text = moment.isoformat(timespec=spec)
    assert parse({"type": "rule.x", "created_at": text + "Z"}).occurred_at == (
        parse({"type": "rule.x", "created_at": text + "+00:00"}).occurred_at
    )
