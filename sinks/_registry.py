"""Which sink types exist: the built-ins plus entry points in ``bighub_siem.sinks``.

A third-party distribution registers a sink with::

    [project.entry-points."bighub_siem.sinks"]
    my_sink = "my_package.sink:MySink"

where ``MySink`` follows ``sinks.base.Sink``: a ``config_model`` class attribute
(a ``SinkConfig`` subclass whose ``type`` is ``Literal["my_sink"]``) and a
constructor taking that config.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any, cast

from sinks.base import Sink, SinkConfig

ENTRY_POINT_GROUP = "bighub_siem.sinks"

# Imported lazily so that a sink's heavy client library is needed only when used.
_BUILTINS: dict[str, str] = {
    "kafka": "sinks.kafka:KafkaSink",
    "stdout": "sinks.stdout:StdoutSink",
    "splunk_hec": "sinks.splunk_hec:SplunkHecSink",
    "s3": "sinks.s3:S3Sink",
    "security_lake": "sinks.security_lake:SecurityLakeSink",
    "sentinel": "sinks.sentinel:SentinelSink",
}


class UnknownSinkTypeError(LookupError):
    """No built-in or installed plug-in provides this sink type."""


def _load(target: str) -> type[Sink]:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return cast("type[Sink]", getattr(module, attr))


def _check(name: str, cls: Any) -> type[Sink]:
    model = getattr(cls, "config_model", None)
    if not (isinstance(model, type) and issubclass(model, SinkConfig)):
        raise TypeError(f"sink type {name!r}: {cls!r} has no SinkConfig config_model")
    return cast("type[Sink]", cls)


def sink_types() -> dict[str, type[Sink]]:
    """Every available sink type by name; built-ins win over plug-ins of the same name."""
    found: dict[str, type[Sink]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = _check(ep.name, ep.load())
    for name, target in _BUILTINS.items():
        found[name] = _check(name, _load(target))
    return found


def sink_type(name: str) -> type[Sink]:
    """The sink class for ``name``.

    Raises:
        UnknownSinkTypeError: nothing provides it.
    """
    types = sink_types()
    if name not in types:
        raise UnknownSinkTypeError(
            f"unknown sink type {name!r}; available: {', '.join(sorted(types))}"
        )
    return types[name]


def build_sink(config: SinkConfig) -> Sink:
    """Construct (without I/O) the sink for a validated config."""
    cls = sink_type(config.type)
    return cast("Sink", cast(Any, cls)(config))
