"""The explicit Arrow schema of each OCSF class and version, and records -> rows.

One schema per (class, version), declared here rather than inferred, so every Parquet
object of a source has the very same columns whatever its events held. Columns are
exactly the OCSF attributes the mapper can emit for that class and version: a 1.1.0
file never carries a 1.7 column. OCSF types map as: string_t -> string, integer_t ->
int32, long_t and timestamp_t -> int64 (``time`` is epoch milliseconds, no Arrow
timestamp type), boolean_t -> bool, json_t -> string (compact JSON), and ``unmapped``
-> map<string, string> (top-level key -> its value; strings as they are, anything
else as compact JSON), the way Security Lake's own sources store it.

``to_row`` refuses a key the schema does not declare: pyarrow would drop it silently.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from sinks.ocsf._schema import API_ACTIVITY, ENTITY_MANAGEMENT, EventClass, features

__all__ = ["RowShape", "SchemaMismatchError", "schema_for", "to_row"]

_S = pa.string()
_I = pa.int32()
_L = pa.int64()
_B = pa.bool_()


class SchemaMismatchError(ValueError):
    """A record holds a key its class's Arrow schema does not declare (a mapper bug)."""


def _struct(**fields: pa.DataType) -> pa.StructType:
    return pa.struct([pa.field(name, kind) for name, kind in fields.items()])


_POLICY = _struct(uid=_S, name=_S, version=_S)
_NAMED = _struct(name=_S)


def _common(version: str) -> list[tuple[str, pa.DataType]]:
    f = features(version)
    metadata = _struct(
        version=_S,
        product=_struct(name=_S, vendor_name=_S),
        uid=_S,
        event_code=_S,
        log_name=_S,
        log_provider=_S,
        logged_time=_L,
        original_time=_S,
        sequence=_I,
        correlation_uid=_S,
        tenant_uid=_S,
        profiles=pa.list_(_S),
    )
    fields: list[tuple[str, pa.DataType]] = [
        ("time", _L),
        ("class_uid", _I),
        ("class_name", _S),
        ("category_uid", _I),
        ("category_name", _S),
        ("activity_id", _I),
        ("activity_name", _S),
        ("type_uid", _L),
        ("type_name", _S),
        ("severity_id", _I),
        ("severity", _S),
        ("timezone_offset", _I),
        ("message", _S),
        ("status_id", _I),
        ("status", _S),
        ("metadata", metadata),
        ("cloud", _struct(provider=_S, region=_S, account=_struct(uid=_S, type_id=_I, type=_S))),
        ("raw_data", _S),
    ]
    if f.raw_data_hash:
        fields.append(("raw_data_hash", _struct(algorithm_id=_I, algorithm=_S, value=_S)))
        fields.append(("raw_data_size", _L))
    return fields


def _api_activity(version: str) -> list[tuple[str, pa.DataType]]:
    f = features(version)
    actor: dict[str, pa.DataType] = {"user": _struct(name=_S, type_id=_I, type=_S)}
    if f.actor_app:
        actor.update(app_uid=_S, app_name=_S)
    else:
        actor["invoked_by"] = _S
    actor["authorizations"] = pa.list_(_struct(decision=_S, policy=_POLICY))
    fields: list[tuple[str, pa.DataType]] = [
        ("status_detail", _S),
        ("api", _struct(operation=_S, service=_NAMED, request=_struct(uid=_S))),
        ("src_endpoint", _struct(ip=_S, name=_S)),
        ("actor", _struct(**actor)),
    ]
    if f.security_control:
        fields += [
            ("action_id", _I),
            ("action", _S),
            ("disposition_id", _I),
            ("disposition", _S),
            ("policy", _POLICY),
            ("risk_score", _I),
            ("risk_level_id", _I),
            ("risk_level", _S),
            ("is_alert", _B),
        ]
    if f.ai_operation:
        fields.append(("ai_model", _struct(name=_S, ai_provider=_S)))
        context = _struct(ai_role_id=_I, ai_role=_S, name=_S, service=_NAMED, application=_NAMED)
        fields.append(("message_context", context))
    return fields


def _entity_management(version: str) -> list[tuple[str, pa.DataType]]:
    f = features(version)
    entity: dict[str, pa.DataType] = {"type": _S}
    if f.entity_extras:
        entity["type_id"] = _I
    entity.update(uid=_S, name=_S, version=_S, data=_S)
    fields: list[tuple[str, pa.DataType]] = [("entity", _struct(**entity))]
    if f.entity_extras:
        fields += [("actor", _struct(user=_NAMED)), ("comment", _S)]
    return fields


@functools.cache
def schema_for(event_class: EventClass, version: str) -> pa.Schema:
    """The Arrow schema of ``event_class`` records of OCSF ``version``."""
    fields = _common(version)
    if event_class == API_ACTIVITY:
        fields += _api_activity(version)
    elif event_class == ENTITY_MANAGEMENT:
        fields += _entity_management(version)
    fields.append(("unmapped", pa.map_(_S, _S)))
    return pa.schema([pa.field(name, kind) for name, kind in fields])


_ASCII = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


def _text(value: Any) -> str:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:  # a lone surrogate: keep it, JSON-escaped
            pass
    return _ASCII.encode(value)


def _unmapped(value: Mapping[str, Any]) -> list[tuple[str, str]]:
    out: dict[str, str] = {}
    for key, item in value.items():
        name = _text(key)
        while name in out:  # only an escaped lone-surrogate key can collide; keep both
            name += "~"
        out[name] = _text(item)
    return list(out.items())


# How to shape a value for an Arrow type, worked out once per type: None for a scalar
# (passed through as is), else ("struct", names, {name: plan}), ("list", plan), ("map",).
Plan = tuple[Any, ...] | None


@functools.cache
def _plan(kind: pa.DataType) -> Plan:
    if pa.types.is_struct(kind):
        fields = {kind.field(i).name: _plan(kind.field(i).type) for i in range(kind.num_fields)}
        return ("struct", frozenset(fields), fields)
    if pa.types.is_list(kind):
        return ("list", _plan(kind.value_type))
    if pa.types.is_map(kind):
        return ("map",)
    return None


def _apply(value: Any, plan: tuple[Any, ...]) -> Any:
    # An error names its path from the inside out, as it propagates (most rows have
    # none, so no path text is built for them).
    tag = plan[0]
    if tag == "struct":
        if not isinstance(value, dict):
            raise SchemaMismatchError(": expected an object")
        names, fields = plan[1], plan[2]
        if not names.issuperset(value):
            extra = sorted(set(value) - names)
            raise SchemaMismatchError(f": {extra} not in the Arrow schema")
        return _fields(value, fields, ".")
    if tag == "list":
        inner = plan[1]
        if inner is None:
            return list(value)
        try:
            return [_apply(item, inner) for item in value]
        except SchemaMismatchError as exc:
            raise SchemaMismatchError(f"[]{exc}") from None
    return _unmapped(value)


def _fields(value: dict[str, Any], fields: dict[str, Plan], sep: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        inner = fields[key]
        if inner is None:
            out[key] = item
            continue
        try:
            out[key] = _apply(item, inner)
        except SchemaMismatchError as exc:
            raise SchemaMismatchError(f"{sep}{key}{exc}") from None
    return out


class RowShape:
    """``to_row`` for one schema, with the per-column plans worked out once."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self._plans = {name: _plan(schema.field(name).type) for name in schema.names}

    def __call__(self, record: Mapping[str, Any]) -> dict[str, Any]:
        plans = self._plans
        if not plans.keys() >= record.keys():
            extra = sorted(set(record) - set(plans))
            raise SchemaMismatchError(f"{extra} not in the Arrow schema")
        entity = record.get("entity")
        if isinstance(entity, dict) and "data" in entity:
            # entity.data is json_t (any JSON): Parquet holds it as compact JSON text.
            record = {**record, "entity": {**entity, "data": _ASCII.encode(entity["data"])}}
        return _fields(record if isinstance(record, dict) else dict(record), plans, "")


def to_row(record: Mapping[str, Any], schema: pa.Schema) -> dict[str, Any]:
    """``record`` shaped for ``schema``: json_t as text, unmapped as a string map.

    Raises:
        SchemaMismatchError: the record holds a key the schema does not declare.
    """
    return RowShape(schema)(record)
