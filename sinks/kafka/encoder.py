"""Event -> Kafka record: topic from a template, key, headers, export record as value.

Pure functions, no client library and no network, so they are tested alone.
"""

from __future__ import annotations

import functools
import json
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sinks._json import read_body
from sinks.base import SCHEMA_VERSION, Event, PermanentSinkError
from sinks.ocsf import Mapper

__all__ = [
    "CONTENT_TYPE",
    "TEMPLATE_FIELDS",
    "KafkaRecord",
    "KeySpec",
    "TopicTemplate",
    "category_of",
    "encode",
    "routable_topics",
]

CONTENT_TYPE = "application/json"
TEMPLATE_FIELDS = frozenset({"category", "event_type", "source"})
TOPIC_MAX_LENGTH = 249  # Kafka's own limit on topic names
_TOPIC_CHARS = re.compile(r"[A-Za-z0-9._-]*")
_KEY_PATH = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_SCHEMA = str(SCHEMA_VERSION).encode()
_JSON = CONTENT_TYPE.encode()


def topic_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid Kafka topic name, or None when it is."""
    if not name:
        return "is empty"
    if name in {".", ".."}:
        return "cannot be '.' or '..'"
    if len(name) > TOPIC_MAX_LENGTH:
        return f"is longer than {TOPIC_MAX_LENGTH} characters"
    if not _TOPIC_CHARS.fullmatch(name):
        return "may contain only ASCII letters, digits, '.', '_' and '-'"
    return None


@dataclass(frozen=True, slots=True)
class TopicTemplate:
    """A topic name with ``{category}``, ``{event_type}`` and ``{source}`` placeholders."""

    template: str
    fields: frozenset[str]

    @classmethod
    def parse(cls, template: str) -> TopicTemplate:
        """Check the placeholders and the literal characters.

        Raises:
            ValueError: unknown placeholder, format spec, or a character Kafka refuses.
        """
        fields: set[str] = set()
        literal = []
        try:
            parts = list(string.Formatter().parse(template))
        except ValueError as exc:  # unbalanced braces
            raise ValueError(f"topic template {template!r}: {exc}") from None
        for text, field, spec, conversion in parts:
            literal.append(text)
            if field is None:
                continue
            if field not in TEMPLATE_FIELDS:
                allowed = ", ".join("{" + f + "}" for f in sorted(TEMPLATE_FIELDS))
                raise ValueError(f"topic template: unknown placeholder {{{field}}}; use {allowed}")
            if spec or conversion:
                raise ValueError(f"topic template: {{{field}}} takes no format spec or conversion")
            fields.add(field)
        fixed = "".join(literal)
        if not _TOPIC_CHARS.fullmatch(fixed):
            raise ValueError(
                f"topic template {template!r}: outside placeholders a topic name may contain"
                " only ASCII letters, digits, '.', '_' and '-'"
            )
        if fields:
            # Every placeholder renders to at least one character; the full name is
            # checked again for each event (an event type may hold anything).
            problem = (
                f"is longer than {TOPIC_MAX_LENGTH} characters"
                if len(fixed) + len(fields) > TOPIC_MAX_LENGTH
                else None
            )
        else:
            problem = topic_name_problem(fixed)
        if problem is not None:
            raise ValueError(f"topic template {template!r}: the topic name {problem}")
        return cls(template, frozenset(fields))

    def render(self, category: str, event_type: str, source: str) -> str:
        if not self.fields:
            return self.template
        return self.template.format(category=category, event_type=event_type, source=source)


@dataclass(frozen=True, slots=True)
class KeySpec:
    """Where the record key comes from: the event id, or a dotted path into the payload.

    A payload path that is missing, null, or not a scalar falls back to the event id,
    so every record has a key and ends up on a partition deterministically.
    """

    path: tuple[str, ...]  # empty: the event id

    @classmethod
    def parse(cls, spec: str) -> KeySpec:
        """Raises ``ValueError`` for a path that is not dot-separated names."""
        if spec == "event_id":
            return cls(())
        if not _KEY_PATH.fullmatch(spec):
            raise ValueError(
                f"key {spec!r}: use event_id, or a dotted path into the payload such as"
                " actor, rule_id or action.tool"
            )
        return cls(tuple(spec.split(".")))

    def key_for(self, event: Event) -> bytes:
        if not self.path:
            return event.event_id.encode()
        value: Any = read_body(event.body)
        for name in self.path:
            if not isinstance(value, Mapping) or name not in value:
                return event.event_id.encode()
            value = value[name]
        if isinstance(value, str):
            try:
                return value.encode()
            except UnicodeEncodeError:  # a lone surrogate escape ("\ud800"): no UTF-8 form
                return event.event_id.encode()
        if isinstance(value, (bool, int, float)):
            return json.dumps(value).encode()
        return event.event_id.encode()  # null, object or array: not a usable key


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


@functools.lru_cache(maxsize=4096)  # event types are few; this runs once per event
def _rendered(
    topic: TopicTemplate, category: str, event_type: str, source: str
) -> tuple[str, str | None]:
    name = topic.render(category, event_type, source)
    return name, topic_name_problem(name)


def encode(
    event: Event, topic: TopicTemplate, key: KeySpec, mapper: Mapper | None = None
) -> KafkaRecord:
    """The record for one event: the export record, or with ``mapper`` its OCSF record.

    Raises:
        PermanentSinkError: the rendered topic is not a valid name (an event type
            with characters Kafka refuses, rendered into ``{event_type}``).
    """
    name, problem = _rendered(topic, event.category, event.event_type, event.source)
    if problem is not None:
        raise PermanentSinkError(f"topic {name[:300]!r} rendered for this event {problem}")
    if mapper is None:
        # The export record of base.py with the payload byte for byte as BIGHUB signed
        # it, raw line breaks included: a record value is framed by its length, not lines.
        value, schema = event.export_json(one_line=False), ("schema_version", _SCHEMA)
    else:
        value, schema = mapper.map(event).json(), ("ocsf_version", mapper.version.encode())
    headers = [
        ("event_id", event.event_id.encode()),
        *_type_headers(event.event_type, event.category),
        schema,
        ("content-type", _JSON),
    ]
    return KafkaRecord(name, key.key_for(event), value, headers)


@functools.lru_cache(maxsize=4096)  # event types are few; this runs once per event
def _type_headers(event_type: str, category: str) -> tuple[tuple[str, bytes], ...]:
    return (("event_type", event_type.encode()), ("category", category.encode()))


# The receiver's category rule (DESIGN.md §2), repeated here because sinks never
# import the receiver: the first dot-separated part of the event type decides.
_CATEGORIES = {"decision_event": "decision", "rule": "rule", "approval": "approval"}
ALL_CATEGORIES = ("decision", "rule", "approval", "other")
_GLOB = re.compile(r"[*?\[]")


def category_of(event_type: str) -> str:
    return _CATEGORIES.get(event_type.split(".", 1)[0], "other")


def routable_topics(template: TopicTemplate, patterns: Sequence[str]) -> tuple[list[str], str]:
    """The topics a sink with these event patterns can produce to, as far as known.

    Returns the sorted topic names and a note on what could not be listed: an
    ``{event_type}`` topic behind a glob pattern, or any ``{source}`` topic (the
    source name is the receiver's, not the sink's).
    """
    if "source" in template.fields:
        return [], "topics depend on {source}; only the connection was checked"
    categories: set[str] = set()
    types: set[str] = set()
    globbed = False
    for pattern in patterns:
        head, dot, _ = pattern.partition(".")
        if not _GLOB.search(pattern):
            types.add(pattern)
            categories.add(category_of(pattern))
        elif dot and not _GLOB.search(head):
            globbed = True
            categories.add(category_of(head))
        else:
            globbed = True
            categories.update(ALL_CATEGORIES)
    if "event_type" in template.fields:
        topics = {template.render(category_of(t), t, "") for t in types}
        note = "event types behind glob patterns get their topics at first send" if globbed else ""
    else:
        topics = {template.render(c, "", "") for c in categories}
        note = ""
    return sorted(t for t in topics if topic_name_problem(t) is None), note
