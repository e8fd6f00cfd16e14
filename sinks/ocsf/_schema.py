"""The slice of the OCSF schema the mapper uses: ids, their captions, per-version features.

Facts from the OCSF schema (1.1.0, 1.7.0, 1.8.0 as compiled by schema.ocsf.io); the
tests validate every record the mapper makes against those compiled schemas, so a
caption or id typed wrong here fails a test.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ACTION",
    "API_ACTIVITY",
    "BASE_EVENT",
    "DISPOSITION",
    "ENTITY_ACTIVITY",
    "ENTITY_MANAGEMENT",
    "RISK_LEVEL",
    "SEVERITY",
    "STATUS",
    "EventClass",
    "Features",
    "features",
]


@dataclass(frozen=True, slots=True)
class EventClass:
    """An OCSF event class: uid, name (snake case), caption, and its category."""

    uid: int
    name: str
    caption: str
    category_uid: int
    category_name: str


API_ACTIVITY = EventClass(6003, "api_activity", "API Activity", 6, "Application Activity")
ENTITY_MANAGEMENT = EventClass(
    3004, "entity_management", "Entity Management", 3, "Identity & Access Management"
)
BASE_EVENT = EventClass(0, "base_event", "Base Event", 0, "Uncategorized")

SEVERITY = {0: "Unknown", 1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical"}
STATUS = {0: "Unknown", 1: "Success", 2: "Failure", 99: "Other"}
ACTION = {0: "Unknown", 1: "Allowed", 2: "Denied"}
DISPOSITION = {
    0: "Unknown",
    1: "Allowed",
    2: "Blocked",
    8: "Approved",
    14: "Delayed",
    25: "Rejected",
}
RISK_LEVEL = {0: "Info", 1: "Low", 2: "Medium", 3: "High", 4: "Critical"}
# Entity Management activities; 1.1.0 has only the first four (the others map to Other).
ENTITY_ACTIVITY = {1: "Create", 3: "Update", 4: "Delete", 8: "Enable", 9: "Disable"}
API_OTHER = 99
OTHER = "Other"


@dataclass(frozen=True, slots=True)
class Features:
    """What a schema version offers beyond 1.1.0.

    Attributes:
        security_control: API Activity and Entity Management carry the security_control
            profile (action_id, disposition_id, policy, risk_score, ...).
        raw_data_hash: ``raw_data_hash`` and ``raw_data_size`` exist.
        actor_app: ``actor.app_name`` / ``actor.app_uid`` exist.
        entity_extras: Entity Management has ``actor``, Enable / Disable activities, and
            ``managed_entity.type_id`` (5 Policy).
        ai_operation: the ai_operation profile (``ai_model``, ``message_context``).
        string_max: the longest ``string_t`` value (1.1.0 caps it; later versions do not).
    """

    version: str
    security_control: bool
    raw_data_hash: bool
    actor_app: bool
    entity_extras: bool
    ai_operation: bool
    string_max: int | None


_FEATURES = {
    "1.1.0": Features("1.1.0", False, False, False, False, False, 65_535),
    "1.7.0": Features("1.7.0", True, True, True, True, False, None),
    "1.8.0": Features("1.8.0", True, True, True, True, True, None),
}


def features(version: str) -> Features:
    """The features of ``version``.

    Raises:
        ValueError: a version the mapper does not support.
    """
    try:
        return _FEATURES[version]
    except KeyError:
        raise ValueError(
            f"OCSF version {version!r} is not supported; use one of {', '.join(_FEATURES)}"
        ) from None
