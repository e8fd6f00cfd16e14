"""Events -> archive objects: partitions, archive lines, gzip NDJSON, object keys. Pure.

Key layout (Hive style, for Athena / Glue partition projection)::

    <prefix>/<category>/dt=YYYY-MM-DD/hour=HH/<first seq>-<last seq>-<sha256 prefix>.ndjson.gz

The partition comes from the event time: ``occurred_at`` when the event states one,
else ``received_at``, in UTC. A line is the archive record below, or with
``encoding = "ocsf"`` the event's OCSF record (``sinks.ocsf``); objects of both kinds
are read back. The name is derived from what the object holds: the
store's seq range and the SHA-256 of the stored bytes (gzip with a fixed mtime makes
them deterministic), so the same events always give the same key. The seq range in
the name lets the writer find objects that may already hold events of a batch
(see ``_archive.py``).
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import json
import math
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from json.encoder import encode_basestring as _quote  # C: quoted, escaped, UTF-8 kept
from typing import Any

from sinks.base import SCHEMA_VERSION, Event
from sinks.s3.manifest import EntryInfo

__all__ = [
    "ArchiveObject",
    "Member",
    "Partition",
    "archive_line",
    "archive_record",
    "decode_object",
    "encode_object",
    "event_time",
    "gzip_chunks",
    "line_chunks",
    "object_name",
    "parse_object_name",
    "split_by_partition",
]

# (seq, source, event_id): one archived event. Seq alone is not enough: a new spool
# starts counting at 1 again, and its events must never pass for old ones.
Member = tuple[int, str, str]

_SAFE_CATEGORY = re.compile(r"[a-z0-9_-]{1,32}")
_CANONICAL_UTC = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}\+00:00"
)
_NAME = re.compile(r"([0-9]{20})-([0-9]{20})-([0-9a-f]{16})\.ndjson\.gz")


@dataclass(frozen=True, slots=True, order=True)
class Partition:
    """One Hive partition: category, day and hour (UTC)."""

    category: str
    day: str  # YYYY-MM-DD
    hour: str  # HH

    def path(self, key_prefix: str) -> str:
        return f"{key_prefix}{self.category}/dt={self.day}/hour={self.hour}/"


@dataclass(frozen=True, slots=True)
class ArchiveObject:
    """An encoded object (``data`` is what is stored) and what the chain records."""

    info: EntryInfo
    members: frozenset[Member]
    data: bytes = b""

    @property
    def key(self) -> str:
        return self.info.key


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_iso(text: object) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def event_time(event: Event) -> datetime:
    """When the event happened, in UTC: ``occurred_at``, else ``received_at``."""
    moment = _parse_iso(event.occurred_at)
    if moment is not None:
        return moment
    return datetime.fromtimestamp(event.received_at, tz=timezone.utc)


def _stamp(event: Event) -> str:
    """``event_time`` as ``YYYY-MM-DDTHH:MM:SS.mmmZ``: fixed width, so it sorts.

    Ingress stores ``occurred_at`` as ``YYYY-MM-DDTHH:MM:SS.mmm+00:00``; that common
    case is sliced instead of parsed (this runs for every archived event).
    """
    occurred = event.occurred_at
    if occurred is not None and len(occurred) == 29 and _CANONICAL_UTC.fullmatch(occurred):
        return occurred[:23] + "Z"
    return _iso(event_time(event))


def _category(event: Event) -> str:
    # The store only holds the receiver's four categories; anything else stays out of keys.
    return event.category if _SAFE_CATEGORY.fullmatch(event.category) else "other"


def split_by_partition(batch: Sequence[Event]) -> dict[Partition, list[int]]:
    """Batch positions per partition, each list in seq order; partitions sorted."""
    groups: dict[tuple[str, str, str], list[int]] = {}
    for position, event in enumerate(batch):
        stamp = _stamp(event)
        groups.setdefault((_category(event), stamp[:10], stamp[11:13]), []).append(position)
    return {
        Partition(*part): sorted(positions, key=lambda p: batch[p].seq)
        for part, positions in sorted(groups.items())
    }


@functools.lru_cache(maxsize=4096)
def _second_iso(second: int) -> str:
    return datetime.fromtimestamp(second, tz=timezone.utc).isoformat(timespec="seconds")[:-6]


def _received_iso(ts: float) -> str:
    """The export record's format for received_at (sinks.base): UTC, milliseconds.

    The same text as ``datetime.fromtimestamp(ts, tz=utc).isoformat(timespec=
    "milliseconds")`` (a property test holds them equal), with the date and time of the
    whole second cached: this runs once per archived event. The fraction is rounded to
    microseconds half to even, as ``fromtimestamp`` does, then cut to milliseconds.
    """
    frac, whole = math.modf(ts)
    micros = round(frac * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    elif micros < 0:
        whole, micros = whole - 1, micros + 1_000_000
    return f"{_second_iso(int(whole))}.{micros // 1000:03d}+00:00"


def _archive_head(event: Event) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "event_id": event.event_id,
        "event_type": event.event_type,
        "category": event.category,
        "occurred_at": event.occurred_at,
        "received_at": _received_iso(event.received_at),
        "source": event.source,
        "delivery_id": event.delivery_id,
        "seq": event.seq,
        "id_origin": event.id_origin,
        "proof": {
            "body_b64": base64.b64encode(event.body).decode("ascii"),
            "signature": event.signature,
            "timestamp": event.timestamp,
        },
    }


def archive_record(event: Event) -> dict[str, Any]:
    """The export record plus what an auditor needs to re-verify the delivery.

    ``seq`` and ``id_origin`` come from the store; ``proof`` carries the raw body
    exactly as received (base64) and the signature and timestamp headers, so anyone
    holding the webhook secret can recompute HMAC-SHA256(secret, timestamp + "." + body).
    """
    return {**_archive_head(event), "payload": event.payload()}


def _text(value: str | None) -> str:
    return "null" if value is None else _quote(value)


def archive_line(event: Event) -> bytes:
    """``archive_record`` as one line of compact UTF-8 JSON, without newline.

    Built by hand because it runs once per archived event (it sets the drain rate);
    a property test holds it equal to ``json.dumps(archive_record(event))``. The
    payload is the stored body itself, not a re-encoding: ingress admitted it only
    as a strict UTF-8 JSON object, so it is spliced in verbatim (raw line breaks,
    which JSON allows only between tokens, become spaces).
    """
    payload = event.body
    if b"\n" in payload or b"\r" in payload:
        payload = payload.replace(b"\r", b" ").replace(b"\n", b" ")
    e = event
    head = (
        f'{{"schema_version":{SCHEMA_VERSION},"event_id":{_quote(e.event_id)},'
        f'"event_type":{_quote(e.event_type)},"category":{_quote(e.category)},'
        f'"occurred_at":{_text(e.occurred_at)},"received_at":"{_received_iso(e.received_at)}",'
        f'"source":{_quote(e.source)},"delivery_id":{_text(e.delivery_id)},"seq":{int(e.seq)},'
        f'"id_origin":{_quote(e.id_origin)},"proof":{{"body_b64":"'
        f'{base64.b64encode(e.body).decode("ascii")}","signature":{_text(e.signature)},'
        f'"timestamp":{_text(e.timestamp)}}},"payload":'
    )
    return head.encode("utf-8") + payload + b"}"


def object_name(first_seq: int, last_seq: int, content_sha256: str) -> str:
    return f"{first_seq:020d}-{last_seq:020d}-{content_sha256[:16]}.ndjson.gz"


def parse_object_name(key: str) -> tuple[int, int] | None:
    """The seq range an object key names, or None for keys the sink did not make."""
    match = _NAME.fullmatch(key.rsplit("/", 1)[-1])
    return (int(match.group(1)), int(match.group(2))) if match else None


# Compresses a stream of chunks (the lines of one object) into gzip bytes.
Gzip = Callable[[Iterable[bytes], int], bytes]
_CHUNK_LINES = 256


def gzip_chunks(chunks: Iterable[bytes], level: int) -> bytes:
    """gzip with mtime 0 and no file name, so the same lines always give the same bytes.

    The bytes equal ``gzip.compress(b"".join(chunks), level, mtime=0)`` however the
    input is cut (zlib's output does not depend on it): a caller may compress chunk by
    chunk on another thread while it builds the next one.
    """
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
    out = [compressor.compress(chunk) for chunk in chunks]
    out.append(compressor.flush())
    return b"".join(out)


def line_chunks(
    ordered: Sequence[Event], line: Callable[[Event], bytes] = archive_line
) -> Iterator[bytes]:
    """The object's lines, newline-terminated, a few hundred per chunk."""
    for start in range(0, len(ordered), _CHUNK_LINES):
        yield b"".join(line(e) + b"\n" for e in ordered[start : start + _CHUNK_LINES])


def encode_object(
    key_prefix: str,
    partition: Partition,
    events: Sequence[Event],
    *,
    level: int = 6,
    compress: Gzip = gzip_chunks,
    line: Callable[[Event], bytes] = archive_line,
) -> ArchiveObject:
    """The object holding ``events`` (all of one partition), ``line``s in seq order.

    Args:
        compress: turns the chunks of lines into the gzip bytes (``gzip_chunks``, or
            the same on another thread: the output must not depend on it).
        line: one event's line (the export record, or its OCSF form).

    Raises:
        ValueError: ``events`` is empty.
    """
    if not events:
        raise ValueError("an archive object holds at least one event")
    ordered = sorted(events, key=lambda e: e.seq)
    data = compress(line_chunks(ordered, line), level)
    digest = hashlib.sha256(data).hexdigest()  # deterministic: the gzip bytes are
    stamps = [_stamp(e) for e in ordered]
    info = EntryInfo(
        key=partition.path(key_prefix) + object_name(ordered[0].seq, ordered[-1].seq, digest),
        sha256=digest,
        size=len(data),
        events=len(ordered),
        first_seq=ordered[0].seq,
        last_seq=ordered[-1].seq,
        first_event_time=min(stamps),
        last_event_time=max(stamps),
    )
    members = frozenset((e.seq, e.source, e.event_id) for e in ordered)
    return ArchiveObject(info, members, data)


def _lines(data: bytes) -> Iterable[dict[str, Any]]:
    for raw in gzip.decompress(data).splitlines():
        if raw.strip():
            value = json.loads(raw)
            if not isinstance(value, dict):
                raise ValueError("archive line is not a JSON object")
            yield value


def _facts(line: dict[str, Any]) -> tuple[Member, datetime | None]:
    """Which event a line holds and when it happened (the rule of ``event_time``)."""
    if "class_uid" in line:  # an OCSF line; archive records have no such key
        meta = line["metadata"]
        member = (meta["sequence"], meta["log_name"], meta["uid"])
        ms = line["time"]
        moment = None
        if isinstance(ms, int) and not isinstance(ms, bool):
            moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    else:
        member = (line["seq"], line["source"], line["event_id"])
        moment = _parse_iso(line.get("occurred_at")) or _parse_iso(line["received_at"])
    seq, source, event_id = member
    if not (isinstance(seq, int) and isinstance(source, str) and isinstance(event_id, str)):
        raise ValueError("archive line without seq / source / event_id")
    return member, moment


def member_lines(data: bytes) -> dict[Member, bytes]:
    """Each archived line of an object, by the event it holds (for content checks).

    Raises:
        ValueError: the object cannot be read (as ``decode_object``).
    """
    out: dict[Member, bytes] = {}
    try:
        for raw in gzip.decompress(data).splitlines():
            if raw.strip():
                line = json.loads(raw)
                out[_facts(line)[0]] = raw
    except (ValueError, OSError, EOFError, zlib.error, KeyError, TypeError, OverflowError) as exc:
        raise ValueError(f"unreadable archive object ({type(exc).__name__}: {exc})") from None
    return out


def decode_object(key: str, data: bytes) -> ArchiveObject:
    """Read back an object this sink wrote: which events it holds, its chain entry.

    Raises:
        ValueError: not gzip (or a bad CRC), not NDJSON, or lines without seq / ids.
    """
    members: set[Member] = set()
    seqs: list[int] = []
    times: list[datetime] = []
    try:
        for line in _lines(data):
            member, moment = _facts(line)
            members.add(member)
            seqs.append(member[0])
            if moment is None:
                raise ValueError("archive line without a readable event time")
            times.append(moment)
    except (ValueError, OSError, EOFError, zlib.error, KeyError, TypeError, OverflowError) as exc:
        raise ValueError(f"unreadable archive object ({type(exc).__name__}: {exc})") from None
    if not seqs:
        raise ValueError("empty archive object")
    info = EntryInfo(
        key=key,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        events=len(seqs),
        first_seq=min(seqs),
        last_seq=max(seqs),
        first_event_time=_iso(min(times)),
        last_event_time=_iso(max(times)),
    )
    return ArchiveObject(info, frozenset(members))
