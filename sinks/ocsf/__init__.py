"""OCSF: BIGHUB events as Open Cybersecurity Schema Framework records.

One pure mapper (``Mapper``) used by every sink's ``encoding = "ocsf"`` and by the
Amazon Security Lake sink; ``OcsfOptions`` is the config mixin those sinks share.
"""

from sinks.ocsf.config import (
    DEFAULT_VERSION,
    VERSIONS,
    Encoding,
    FieldPaths,
    OcsfFields,
    OcsfMapping,
    OcsfOptions,
    OcsfVersion,
    Vocabulary,
)
from sinks.ocsf.mapper import CloudContext, Mapper, OcsfRecord, class_of

__all__ = [
    "DEFAULT_VERSION",
    "VERSIONS",
    "CloudContext",
    "Encoding",
    "FieldPaths",
    "Mapper",
    "OcsfFields",
    "OcsfMapping",
    "OcsfOptions",
    "OcsfRecord",
    "OcsfVersion",
    "Vocabulary",
    "class_of",
    "mapper_for",
]


def mapper_for(options: OcsfFields) -> Mapper | None:
    """The mapper a sink config asks for, or None with ``encoding = "export"``."""
    if isinstance(options, OcsfOptions) and options.encoding != "ocsf":
        return None
    return Mapper(options.ocsf, options.ocsf_version)
