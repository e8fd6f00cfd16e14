"""A small offline OCSF validator over the compiled schemas of schema.ocsf.io.

The schemas come from the PyPI package ``ocsf-json-schema`` (its bundled copies of
``https://schema.ocsf.io/<version>/export/schema``: 1.1.0 and 1.7.0 in the v1 export
format, 1.8.0 in v2). The checks, recursively through objects and arrays:

- no key the class or object does not define; no null values;
- a key that belongs to a profile only when ``metadata.profiles`` lists the profile,
  and only profiles the class supports;
- every required attribute present (a profile's only when the profile is applied);
- types: strings (max length, regex), integers (32-bit), longs (64-bit), floats,
  booleans, JSON, objects; arrays where ``is_array``;
- enum values; sibling captions (``x`` equals the caption of ``x_id`` unless Other);
- ``at_least_one`` / ``just_one`` constraints of classes and objects;
- ``type_uid = class_uid * 100 + activity_id``.

A second, independent check runs the JSON Schema that ``ocsf-json-schema`` generates
for the class and profiles through ``jsonschema``.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

import jsonschema
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


@functools.cache
def _schema(version: str) -> dict[str, Any]:
    return dict(get_ocsf_schema(version=version))


@functools.cache
def _types(version: str) -> dict[str, dict[str, Any]]:
    s = _schema(version)
    types = s["types"] if "types" in s else s["dictionary"]["types"]
    return dict(types.get("attributes", types))


def _profiles_of(version: str, attr: dict[str, Any]) -> set[str]:
    if attr.get("profiles"):
        return set(attr["profiles"])
    if attr.get("profile"):
        return {attr["profile"]}
    return set()


@functools.cache
def _class_by_uid(version: str, uid: int) -> dict[str, Any] | None:
    s = _schema(version)
    for cls in s["classes"].values():
        if cls.get("uid") == uid:
            return dict(cls)
    base = s.get("base_event")
    return dict(base) if base and uid == 0 else None


def _base_type(version: str, name: str) -> tuple[str, dict[str, Any]]:
    """The primitive type under ``name`` and the merged constraints on the way."""
    types = _types(version)
    merged: dict[str, Any] = {}
    while True:
        spec = types.get(name, {})
        for key in ("max_len", "regex", "range", "values"):
            if key in spec and key not in merged:
                merged[key] = spec[key]
        parent = spec.get("type")
        if parent is None or parent == name:
            return name, merged
        name = parent


class _Checker:
    def __init__(self, version: str, profiles: set[str]) -> None:
        self.version = version
        self.profiles = profiles
        self.problems: list[str] = []

    def fail(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}")

    def entity(self, value: Any, spec: dict[str, Any], where: str) -> None:
        if not isinstance(value, dict):
            self.fail(where, f"expected an object, got {type(value).__name__}")
            return
        attrs: dict[str, Any] = spec.get("attributes", {})
        if spec.get("name") == "object" and not attrs:
            return  # the generic object: any keys (e.g. unmapped)
        for key, item in value.items():
            attr = attrs.get(key)
            if attr is None:
                self.fail(f"{where}.{key}", "not defined here")
                continue
            need = _profiles_of(self.version, attr)
            if need and not need & self.profiles:
                self.fail(f"{where}.{key}", f"needs profile {sorted(need)} in metadata.profiles")
            self.attribute(item, attr, f"{where}.{key}")
        for key, attr in attrs.items():
            need = _profiles_of(self.version, attr)
            applies = not need or bool(need & self.profiles)
            if attr.get("requirement") == "required" and applies and key not in value:
                self.fail(f"{where}.{key}", "required, missing")
        self.constraints(value, spec.get("constraints", {}), where)
        self.siblings(value, attrs, where)

    def constraints(self, value: dict[str, Any], constraints: dict[str, Any], where: str) -> None:
        for kind, keys in constraints.items():
            present = [k for k in keys if k in value]
            if kind == "at_least_one" and not present:
                self.fail(where, f"needs at least one of {keys}")
            if kind == "just_one" and len(present) != 1:
                self.fail(where, f"needs exactly one of {keys}, has {present}")

    def siblings(self, value: dict[str, Any], attrs: dict[str, Any], where: str) -> None:
        for key, attr in attrs.items():
            sibling = attr.get("sibling")
            enum = attr.get("enum")
            if not sibling or not enum or key not in value or sibling not in value:
                continue
            caption = enum.get(str(value[key]), {}).get("caption")
            if value[key] != 99 and caption is not None and value[sibling] != caption:
                self.fail(f"{where}.{sibling}", f"{value[sibling]!r} is not {caption!r}")

    def attribute(self, value: Any, attr: dict[str, Any], where: str) -> None:
        if value is None:
            self.fail(where, "null value")
            return
        if attr.get("is_array"):
            if not isinstance(value, list):
                self.fail(where, "expected an array")
                return
            for i, item in enumerate(value):
                self.single(item, attr, f"{where}[{i}]")
            return
        self.single(value, attr, where)

    def single(self, value: Any, attr: dict[str, Any], where: str) -> None:
        if value is None:
            self.fail(where, "null value")
            return
        if attr.get("type") == "object_t":
            obj = _schema(self.version)["objects"].get(attr.get("object_type", "object"))
            self.entity(value, obj or {"name": "object"}, where)
            return
        self.scalar(value, attr.get("type", "string_t"), where)
        enum = attr.get("enum")
        if enum and str(value) not in enum:
            self.fail(where, f"{value!r} is not one of {sorted(enum, key=int)}")

    def scalar(self, value: Any, type_name: str, where: str) -> None:
        base, spec = _base_type(self.version, type_name)
        if base == "json_t":
            return
        if base == "string_t":
            if not isinstance(value, str):
                self.fail(where, f"{type_name}: expected a string")
                return
            if "max_len" in spec and len(value) > int(spec["max_len"]):
                self.fail(where, f"{type_name}: longer than {spec['max_len']}")
            if "regex" in spec and not re.search(spec["regex"], value):
                self.fail(where, f"{type_name}: {value!r} does not match the type's pattern")
            return
        if base in ("integer_t", "long_t"):
            low, high = _INT32 if base == "integer_t" else _INT64
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                self.fail(where, f"{type_name}: {value!r} is not a {base}")
            return
        if base == "float_t":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok or not math.isfinite(float(value)):
                self.fail(where, f"{type_name}: {value!r} is not a float")
            return
        if base == "boolean_t":
            if not isinstance(value, bool):
                self.fail(where, f"{type_name}: {value!r} is not a boolean")
            return
        self.fail(where, f"unknown type {type_name}")


def problems(record: dict[str, Any], version: str) -> list[str]:
    """Everything wrong with ``record`` as an OCSF ``version`` event (empty: valid)."""
    uid = record.get("class_uid")
    cls = _class_by_uid(version, uid) if isinstance(uid, int) else None
    if cls is None:
        return [f"class_uid {uid!r} is not a class of {version}"]
    meta = record.get("metadata")
    profiles = set(meta.get("profiles", [])) if isinstance(meta, dict) else set()
    unsupported = profiles - set(cls.get("profiles") or [])
    checker = _Checker(version, profiles)
    if unsupported:
        checker.fail("metadata.profiles", f"{sorted(unsupported)} not supported by the class")
    checker.entity(record, {**cls, "name": cls["name"]}, cls["name"])
    if isinstance(meta, dict) and meta.get("version") != version:
        checker.fail("metadata.version", f"{meta.get('version')!r} is not {version}")
    activity = record.get("activity_id")
    if isinstance(activity, int) and record.get("type_uid") != uid * 100 + activity:
        checker.fail("type_uid", "is not class_uid * 100 + activity_id")
    return checker.problems + _jsonschema_problems(record, version, cls["name"], profiles)


@functools.cache
def _validator(version: str, class_name: str, profiles: frozenset[str]) -> Any:
    generator = OcsfJsonSchemaEmbedded(get_ocsf_schema(version=version))
    schema = generator.get_class_schema(class_name=class_name, profiles=sorted(profiles))
    return jsonschema.Draft202012Validator(schema)


def _jsonschema_problems(
    record: dict[str, Any], version: str, class_name: str, profiles: set[str]
) -> list[str]:
    validator = _validator(version, class_name, frozenset(profiles))
    return [
        f"jsonschema: {'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(record)
    ]


def assert_valid(record: dict[str, Any], version: str) -> None:
    found = problems(record, version)
    assert not found, "\n".join(found)
