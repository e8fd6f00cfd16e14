"""``ocsf preview``: the OCSF record(s) a BIGHUB body becomes, for tuning the field map.

Reads one body (a JSON object) or several (JSON lines) from standard input, reads its
envelope the way ingress does, and maps it with the OCSF settings of each sink that
writes OCSF (``--sink`` picks one; with none configured, the defaults). Records go to
stdout, one per body and sink; notes go to stderr. Nothing is stored or sent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

from receiver.cli._common import load, with_config
from receiver.envelope import parse_envelope
from receiver.errors import EnvelopeError
from receiver.settings import Settings
from sinks import Event
from sinks.ocsf import VERSIONS, Mapper, OcsfFields, OcsfMapping, OcsfVersion, mapper_for

__all__ = ["register"]


def _mappers(
    settings: Settings, sink: str | None, version: OcsfVersion | None
) -> list[tuple[str, Mapper]]:
    """(label, mapper) for each OCSF sink, or the named one, or the defaults."""
    found: list[tuple[str, Mapper]] = []
    for config in settings.sinks:
        if sink is not None and config.name != sink:
            continue
        if not isinstance(config, OcsfFields):
            continue
        mapper = mapper_for(config)
        if mapper is None and sink is None:
            continue  # an export-encoded sink: not what the operator is tuning
        mapping = config.ocsf
        found.append((config.name, Mapper(mapping, version or config.ocsf_version)))
    if sink is not None and not found:
        raise LookupError(f"no sink named {sink!r} with OCSF settings")
    if not found:
        found.append(("(defaults)", Mapper(OcsfMapping(), version or VERSIONS[-1])))
    return found


def _bodies(data: bytes) -> Iterator[bytes]:
    text = data.strip()
    if text.startswith(b"{") and b"\n{" not in text:
        yield text
        return
    for line in text.splitlines():
        if line.strip():
            yield line.strip()


def _event(settings: Settings, body: bytes, seq: int) -> Event:
    cfg = settings.ingress
    names = {
        "event_id": cfg.event_id_header,
        "event_type": cfg.event_type_header,
        "delivery_id": cfg.delivery_id_header,
    }
    env = parse_envelope(body, {}, names)
    return Event(
        seq=seq,
        event_id=env.event_id,
        id_origin=env.id_origin,
        event_type=env.event_type,
        category=env.category,
        occurred_at=env.occurred_at,
        received_at=time.time(),
        source=cfg.source,
        delivery_id=None,
        body=body,
    )


def cmd_preview(args: argparse.Namespace) -> int:
    settings = load(args.config)
    try:
        mappers = _mappers(settings, args.sink, args.ocsf_version)
    except LookupError as exc:
        print(f"bighub-siem: {exc}", file=sys.stderr)
        return 2
    limit = settings.ingress.max_body_bytes
    data = sys.stdin.buffer.read(limit * 64 + 1)
    if len(data) > limit * 64:
        print("bighub-siem: input too large", file=sys.stderr)
        return 1
    failed = 0
    for seq, body in enumerate(_bodies(data), start=1):
        if len(body) > limit:
            print(f"body {seq}: over ingress.max_body_bytes ({limit})", file=sys.stderr)
            failed += 1
            continue
        try:
            event = _event(settings, body, seq)
        except EnvelopeError as exc:
            # The code and fixed detail only: the body is the operator's, but stays off logs.
            print(f"body {seq}: ingress would refuse it: {exc.code}: {exc.detail}", file=sys.stderr)
            failed += 1
            continue
        for label, mapper in mappers:
            record = mapper.map(event)
            print(
                f"# body {seq} -> sink {label}: OCSF {mapper.version} "
                f"{record.event_class.caption} ({record.event_class.uid})",
                file=sys.stderr,
            )
            out: dict[str, Any] = record.record
            indent = None if args.compact else 2
            print(json.dumps(out, indent=indent, ensure_ascii=True))
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ocsf = sub.add_parser("ocsf", help="OCSF tools")
    verbs = ocsf.add_subparsers(dest="ocsf_command", required=True)
    preview = with_config(
        verbs.add_parser(
            "preview",
            help="print the OCSF record(s) a BIGHUB body on stdin becomes",
            description=__doc__,
        )
    )
    preview.add_argument("--sink", help="use this sink's OCSF settings (default: every OCSF sink)")
    preview.add_argument(
        "--ocsf-version", choices=VERSIONS, help="override the sink's ocsf_version"
    )
    preview.add_argument("--compact", action="store_true", help="one line per record")
    preview.set_defaults(func=cmd_preview)
