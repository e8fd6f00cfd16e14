"""Stored BIGHUB event -> one OCSF record. Pure: no I/O, no clock.

Classes (see docs/ocsf.md for the full field map):

- ``decision_event.*`` -> API Activity (6003): the agent's tool call and BIGHUB's verdict;
- ``approval.*`` -> API Activity (6003): the approval state, the approver as ``actor.user``;
- ``rule.*`` -> Entity Management (3004) of a Policy entity, the patch in ``entity.data``;
- anything else -> Base Event (0), so an unknown event type still makes a valid record.

Every record carries ``metadata.uid`` (the event id), ``raw_data`` (the signed body,
verbatim) and, from 1.7.0 on, ``raw_data_hash`` (its SHA-256). Payload values the
mapping does not place stay under ``unmapped``. ``map`` never raises on a payload:
whatever BIGHUB sends becomes a record that validates against the chosen version.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sinks.base import Event
from sinks.ocsf._classes import Draft, build_approval, build_decision, build_rule, lookups
from sinks.ocsf._payload import Payload
from sinks.ocsf._schema import (
    API_ACTIVITY,
    API_OTHER,
    BASE_EVENT,
    ENTITY_MANAGEMENT,
    OTHER,
    SEVERITY,
    EventClass,
    features,
)
from sinks.ocsf.config import OcsfMapping

__all__ = ["CloudContext", "Mapper", "OcsfRecord", "class_of"]

_ASCII = json.JSONEncoder(separators=(",", ":"))  # ASCII escapes: lone surrogates survive
_INT32_MAX = 2**31 - 1
_TIME_KEYS = ("created_at", "timestamp", "occurred_at")  # ingress's order (DESIGN.md §2)
_CLASSES = {"decision": API_ACTIVITY, "approval": API_ACTIVITY, "rule": ENTITY_MANAGEMENT}


def class_of(category: str) -> EventClass:
    """The OCSF class events of a receiver category become."""
    return _CLASSES.get(category, BASE_EVENT)


@dataclass(frozen=True, slots=True)
class CloudContext:
    """Adds the cloud profile: where the records are kept (Security Lake's account)."""

    region: str
    account_uid: str
    provider: str = "AWS"


@dataclass(frozen=True, slots=True)
class OcsfRecord:
    """One OCSF record and the facts sinks route it by."""

    event_class: EventClass
    time_ms: int
    record: dict[str, Any]

    def json(self) -> bytes:
        """Compact JSON, ASCII-escaped (payload strings may hold lone surrogates)."""
        return _ASCII.encode(self.record).encode("ascii")


def _time_ms(iso: str) -> int | None:
    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return round(moment.timestamp() * 1000)


def _ingress_time(value: object) -> int | None:
    """The epoch ms ingress derived from an envelope time value (same rules)."""
    try:
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            if not math.isfinite(value):
                return None
            seconds = value / 1000 if abs(value) > 1e11 else value
            datetime.fromtimestamp(seconds, tz=timezone.utc)  # ingress's range check
            return round(seconds * 1000)
        if isinstance(value, str) and 0 < len(value) <= 64:
            return _time_ms(value.strip())
    except (OverflowError, OSError, ValueError):
        return None
    return None


class Mapper:
    """Maps events to OCSF records of one schema version with one field mapping."""

    def __init__(
        self, mapping: OcsfMapping, version: str, *, cloud: CloudContext | None = None
    ) -> None:
        self.mapping = mapping
        self.features = features(version)  # raises ValueError for an unknown version
        self.version = version
        self.cloud = cloud
        self._vocab = lookups(mapping)

    def map(self, event: Event) -> OcsfRecord:
        """The OCSF record for ``event``; never raises for any stored body."""
        event_class = class_of(event.category)
        try:
            parsed: Any = event.payload()
        except ValueError:  # ingress stores JSON objects only; be safe all the same
            parsed = None
        root = parsed if isinstance(parsed, dict) else {}
        payload = Payload(root, max_len=self.features.string_max)
        draft = Draft({}, payload, self.mapping, self.features, event.event_type, self._vocab)
        if event_class is API_ACTIVITY and event.category == "decision":
            activity_id, activity_name = build_decision(draft)
        elif event_class is API_ACTIVITY:
            activity_id, activity_name = build_approval(draft)
        elif event_class is ENTITY_MANAGEMENT:
            activity_id, activity_name = build_rule(draft)
            draft.severity_id = 1
        else:
            activity_id, activity_name = API_OTHER, event.event_type
            draft.severity_id = 0
            draft.set("message", f"BIGHUB event {event.event_type}")
        time_ms, original_time = self._envelope(draft, event)
        record = self._classification(event_class, activity_id, activity_name, draft)
        record["time"] = time_ms
        record["timezone_offset"] = 0
        record["metadata"] = self._metadata(draft, event, original_time)
        record.update(draft.record)
        self._raw(record, event)
        if self.cloud is not None:
            record["cloud"] = {
                "provider": self.cloud.provider,
                "region": self.cloud.region,
                "account": {"uid": self.cloud.account_uid, "type_id": 10, "type": "AWS Account"},
            }
        leftovers = payload.leftovers()
        if parsed is not None and not isinstance(parsed, dict):
            leftovers = {"payload": parsed}
        if leftovers:
            record["unmapped"] = leftovers
        return OcsfRecord(event_class, time_ms, record)

    def _classification(
        self, event_class: EventClass, activity_id: int, activity_name: str, draft: Draft
    ) -> dict[str, Any]:
        type_caption = OTHER if activity_id == API_OTHER else activity_name
        return {
            "class_uid": event_class.uid,
            "class_name": event_class.caption,
            "category_uid": event_class.category_uid,
            "category_name": event_class.category_name,
            "activity_id": activity_id,
            "activity_name": self._fit(activity_name),
            "type_uid": event_class.uid * 100 + activity_id,
            "type_name": f"{event_class.caption}: {type_caption}",
            "severity_id": draft.severity_id,
            "severity": SEVERITY[draft.severity_id],
        }

    def _fit(self, text: str) -> str:
        limit = self.features.string_max
        return text if limit is None else text[:limit]

    def _envelope(self, draft: Draft, event: Event) -> tuple[int, str | None]:
        """Take the envelope fields ingress read: the event time in epoch ms, and the
        time as the payload wrote it (when the payload gave it)."""
        root = draft.payload.root
        for key, origin in (("event_id", "body.event_id"), ("id", "body.id")):
            if event.id_origin == origin and key in root:
                draft.payload.take((key,))
        for key in ("event_type", "type"):
            if root.get(key) == event.event_type:
                draft.payload.take((key,))
                break
        occurred = _time_ms(event.occurred_at) if event.occurred_at else None
        if occurred is not None:
            for key in _TIME_KEYS:
                if key in root and _ingress_time(root[key]) == occurred:
                    draft.payload.take((key,))
                    original = root[key]
                    return occurred, original if isinstance(original, str) else json.dumps(original)
            return occurred, None
        return round(event.received_at * 1000), None

    def _metadata(self, draft: Draft, event: Event, original: str | None) -> dict[str, Any]:
        p = self.mapping.paths
        meta: dict[str, Any] = {
            "version": self.version,
            "product": {"name": self.mapping.product_name, "vendor_name": self.mapping.vendor_name},
            "uid": event.event_id,
            "event_code": event.event_type,
            "log_name": event.source,
            "log_provider": "bighub-siem",
            "logged_time": round(event.received_at * 1000),
        }
        if original is not None:
            meta["original_time"] = self._fit(original)
        if 0 <= event.seq <= _INT32_MAX:
            meta["sequence"] = event.seq
        correlation = draft.payload.text(p.correlation_id, ids=True)
        if correlation is not None:
            meta["correlation_uid"] = correlation
        tenant = draft.payload.text(p.tenant_id, ids=True)
        if tenant is not None:
            meta["tenant_uid"] = tenant
        profiles = set(draft.profiles)
        if self.cloud is not None:
            profiles.add("cloud")
        if profiles:
            meta["profiles"] = sorted(profiles)
        return meta

    def _raw(self, record: dict[str, Any], event: Event) -> None:
        try:
            text = event.body.decode("utf-8")
        except UnicodeDecodeError:  # ingress admits strict UTF-8 only
            text = None
        if text is not None and (self.features.string_max is None or len(text) <= self._max()):
            record["raw_data"] = text
        if self.features.raw_data_hash:
            record["raw_data_hash"] = {
                "algorithm_id": 3,
                "algorithm": "SHA-256",
                "value": hashlib.sha256(event.body).hexdigest(),
            }
            record["raw_data_size"] = len(event.body)

    def _max(self) -> int:
        return self.features.string_max or 0
