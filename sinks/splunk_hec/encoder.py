"""Events -> HEC request bodies. Pure: no I/O, no clock, tested without a network.

One HEC event object per stored event::

    {"host": ..., "source": "bighub-siem", "sourcetype": "bighub:decision",
     "index": "bighub", "time": 1795939200.123,
     "fields": {"event_id": ..., "event_type": ..., "category": ..., "actor": ..., "domain": ...},
     "event": <the export record, schema_version 1>}

A body is such objects concatenated (HEC's batch format). ``time`` is when the event
says it happened (epoch seconds, millisecond precision), else when it was received.
With ``encoding = "ocsf"`` the ``event`` is the OCSF record and the default sourcetype
is ``ocsf:bighub:<class>`` (``api_activity``, ``entity_management``, ``base_event``).

The export record's ``payload`` is the stored body itself, the bytes BIGHUB signed,
spliced in, never parsed and encoded again: a re-encoding would change number forms
and escapes (``1e400`` would even become ``Infinity``, which is not JSON), so the
payload would no longer be what was signed. The body is parsed only to read the
configured ``payload_fields``. Encoding runs once per event and sets
much of the drain rate: the metadata is encoded once per category, the rest with
orjson; text orjson cannot take (a lone surrogate escape, a number beyond double
range) falls back to the standard library with ASCII escapes.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from sinks._json import read_body
from sinks.base import Event
from sinks.ocsf import Mapper, class_of, mapper_for
from sinks.splunk_hec.config import CATEGORIES, DEFAULT_SOURCETYPES, SplunkHecConfig

__all__ = [
    "Encoder",
    "Metadata",
    "event_time",
    "gzip_body",
    "indexed_fields",
    "plan_pieces",
    "plan_requests",
]

_MAX_FIELD_CHARS = 1024  # longer values stay searchable in the event, not as indexed fields


@dataclass(frozen=True, slots=True)
class Metadata:
    """The HEC metadata keys of one event; ``None`` leaves the key out."""

    index: str | None = None
    sourcetype: str | None = None
    source: str | None = None
    host: str | None = None


def event_time(event: Event) -> float:
    """Epoch seconds with millisecond precision: occurred-at, else received-at."""
    seconds = event.received_at
    if event.occurred_at:
        try:
            moment = datetime.fromisoformat(event.occurred_at.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is not None:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            seconds = moment.timestamp()
    # Whole milliseconds divided once, so the JSON shows at most three decimals.
    return round(seconds * 1000) / 1000


def _flat(value: object) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str) and 0 < len(value) <= _MAX_FIELD_CHARS:
        return value
    return None  # objects, lists, null, empty or huge strings: HEC fields are flat


def indexed_fields(event: Event, payload: Any, names: Sequence[str]) -> dict[str, str]:
    """The flat ``fields`` object: ids and type always, listed payload keys when scalar."""
    fields = {
        "event_id": event.event_id,
        "event_type": event.event_type,
        "category": event.category,
    }
    # ``type(...) is dict`` first: it is what the JSON reader gives, and an ABC check per
    # event and field costs more than the rest of this function.
    if not names or (type(payload) is not dict and not isinstance(payload, Mapping)):
        return fields
    nested = payload.get("data")
    if type(nested) is not dict and not isinstance(nested, Mapping):
        nested = None
    for name in names:
        raw = payload.get(name)
        if raw is None and nested is not None:
            raw = nested.get(name)
        if type(raw) is str:  # the usual case, decided without _flat
            if 0 < len(raw) <= _MAX_FIELD_CHARS:
                fields[name] = raw
        elif raw is not None:
            value = _flat(raw)
            if value is not None:
                fields[name] = value
    return fields


@dataclass(frozen=True, slots=True)
class Encoder:
    """Turns events into HEC event objects (bytes), one per event."""

    by_category: Mapping[str, Metadata]
    payload_fields: tuple[str, ...] = ()
    fallback: Metadata = field(default_factory=Metadata)
    mapper: Mapper | None = None
    _cache: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_config(cls, config: SplunkHecConfig) -> Encoder:
        base = Metadata(config.index, config.sourcetype, config.source, config.host)
        mapper = mapper_for(config)
        by_category: dict[str, Metadata] = {}
        for category in CATEGORIES:
            default_sourcetype = (
                DEFAULT_SOURCETYPES[category]
                if mapper is None
                else f"ocsf:bighub:{class_of(category).name}"
            )
            over = config.categories.get(category)
            by_category[category] = Metadata(
                index=(over.index if over and over.index else None) or base.index,
                sourcetype=(over.sourcetype if over and over.sourcetype else None)
                or base.sourcetype
                or default_sourcetype,
                source=(over.source if over and over.source else None) or base.source,
                host=(over.host if over and over.host else None) or base.host,
            )
        return cls(by_category, tuple(config.payload_fields), by_category["other"], mapper)

    def metadata(self, category: str) -> Metadata:
        return self.by_category.get(category, self.fallback)

    def _start(self, category: str) -> bytes:
        """``{"host":..,"source":..,"sourcetype":..,"index":..,`` for a category, cached:
        the object's opening and metadata keys (those set), ready for the rest."""
        cache: dict[str, bytes] = self._cache
        found = cache.get(category)
        if found is None:
            meta = self.metadata(category)
            found = b"".join(
                b'"' + key.encode() + b'":' + orjson.dumps(getattr(meta, key)) + b","
                for key in ("host", "source", "sourcetype", "index")
                if getattr(meta, key) is not None
            )
            found = b"{" + found
            if len(cache) < 64:  # categories are four; anything else is not cached
                cache[category] = found
        return found

    def event(self, event: Event) -> bytes:
        """One HEC event object as compact UTF-8 JSON.

        Raises:
            ValueError: the stored body is not JSON (ingress never stores such a body).
        """
        payload = read_body(event.body) if self.payload_fields else None
        fields = indexed_fields(event, payload, self.payload_fields)
        start = self._start(event.category)
        # One JSON encoding per event for time, fields and the record head (metadata keys
        # come first, so the cached part needs no formatting per event):
        # ``{"time":..,"fields":{..},"event":{..}}``, opened by ``start``.
        if self.mapper is not None:  # encoding = "ocsf": the OCSF record is the event
            rest = _dumps({"time": event_time(event), "fields": fields})
            record = self.mapper.map(event).json()
            return b"".join((start, rest[1:-1], b',"event":', record, b"}"))
        rest = _dumps(
            {"time": event_time(event), "fields": fields, "event": event.export_record_head()}
        )
        # The last two bytes of ``rest`` close the head and the object; the payload,
        # spliced in as stored, goes between them.
        body = event.body.strip(b" \t\r\n")
        return b"".join((start, rest[1:-2], b',"payload":', body, b"}}"))

    def events(self, batch: Iterable[Event]) -> list[bytes]:
        return [self.event(e) for e in batch]


def _dumps(value: object) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:
        # A lone surrogate escape ("\ud800") has no UTF-8 form: ASCII escapes.
        return json.dumps(value, separators=(",", ":")).encode("ascii")


# How a send cuts its events for encoding (see ``plan_pieces``).
FIRST_PIECE_EVENTS = 250
PIECE_EVENTS = 1000


def plan_pieces(positions: Sequence[int]) -> list[list[int]]:
    """Cut a send's ``positions`` into the pieces encoded one after another, each posted
    while the next is encoded: a small first piece, so HEC has work while the rest is
    encoded, then pieces of up to ``PIECE_EVENTS``.

    Each piece is at least one request (``plan_requests`` cuts it by bytes), and every
    request costs about a millisecond of CPU in httpx and the loopback or TLS socket:
    more, smaller pieces would overlap more but cost more than they save.
    """
    pieces = [list(positions[:FIRST_PIECE_EVENTS])] if positions else []
    for start in range(FIRST_PIECE_EVENTS, len(positions), PIECE_EVENTS):
        pieces.append(list(positions[start : start + PIECE_EVENTS]))
    return pieces


def plan_requests(
    sizes: Sequence[int] | Mapping[int, int], positions: Sequence[int], max_bytes: int
) -> list[list[int]]:
    """Group ``positions`` (in order) into requests of at most ``max_bytes`` each.

    An event bigger than ``max_bytes`` goes alone; HEC decides whether it fits.
    """
    plans: list[list[int]] = []
    current: list[int] = []
    size = 0
    for pos in positions:
        n = sizes[pos]
        if current and size + n > max_bytes:
            plans.append(current)
            current, size = [], 0
        current.append(pos)
        size += n
    if current:
        plans.append(current)
    return plans


def gzip_body(body: bytes) -> bytes:
    """gzip with a fixed mtime, so the same body always compresses to the same bytes."""
    # Level 3: on our JSON it compresses to ~4.6% of the size (level 6: ~3.6%) at a
    # third of level 6's CPU cost (measured with tests/bench/bench_hec.py's events).
    return gzip.compress(body, compresslevel=3, mtime=0)
