"""Events -> Security Lake Parquet objects, and back. Pure (no network).

Layout of one custom source (one OCSF class)::

    ext/<source>[/<source version>]/region=<region>/accountId=<account>/eventDay=<YYYYMMDD>/
        <first seq>-<last seq>-<sha256 prefix>.parquet

``eventDay`` is the UTC day of the event time (``occurred_at``, else ``received_at``).
Each object holds one class, records sorted by ``time`` (then seq), zstd-compressed,
data pages of at most 1 MiB, the class's declared Arrow schema (``_arrow.py``). The
name derives from the seq range and the SHA-256 of the bytes (the writer is
deterministic), so the same events always give the same key. Which events an object
holds is read from its own columns: ``metadata.sequence``, ``metadata.log_name`` (the
receiver's source) and ``metadata.uid`` (the event id).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sinks.base import Event
from sinks.ocsf import Mapper, OcsfRecord
from sinks.ocsf._schema import EventClass
from sinks.s3._format import Partitioned
from sinks.s3.encoder import ArchiveObject, Member, event_time
from sinks.s3.manifest import EntryInfo
from sinks.security_lake._arrow import RowShape, schema_for

__all__ = ["DayPartition", "ParquetFormat", "object_name", "parse_object_name"]

CONTENT_TYPE = "application/vnd.apache.parquet"
_NAME = re.compile(r"([0-9]{20})-([0-9]{20})-([0-9a-f]{16})\.parquet")
_PAGE = 1024 * 1024  # Security Lake: data pages of at most 1 MiB (uncompressed)
_CANONICAL = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True, slots=True, order=True)
class DayPartition:
    """``region=<r>/accountId=<a>/eventDay=<YYYYMMDD>/`` under the source's prefix."""

    day: str
    region: str
    account: str

    def path(self, key_prefix: str) -> str:
        return f"{key_prefix}region={self.region}/accountId={self.account}/eventDay={self.day}/"


def object_name(first_seq: int, last_seq: int, content_sha256: str) -> str:
    return f"{first_seq:020d}-{last_seq:020d}-{content_sha256[:16]}.parquet"


def parse_object_name(key: str) -> tuple[int, int] | None:
    """The seq range a key names, or None for keys this format did not make."""
    match = _NAME.fullmatch(key.rsplit("/", 1)[-1])
    return (int(match.group(1)), int(match.group(2))) if match else None


def _iso_ms(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _entry(
    where: str, data: bytes, seqs: Sequence[int], times: Sequence[int], *, named: bool = False
) -> EntryInfo:
    """The chain entry of an object: ``where`` is its key (``named``) or its folder."""
    digest = hashlib.sha256(data).hexdigest()
    key = where if named else where + object_name(min(seqs), max(seqs), digest)
    return EntryInfo(
        key=key,
        sha256=digest,
        size=len(data),
        events=len(seqs),
        first_seq=min(seqs),
        last_seq=max(seqs),
        first_event_time=_iso_ms(min(times)),
        last_event_time=_iso_ms(max(times)),
    )


class ParquetFormat:
    """One OCSF class as Security Lake Parquet (an ``ObjectFormat`` for the writer)."""

    content_type = CONTENT_TYPE

    def __init__(
        self,
        mapper: Mapper,
        event_class: EventClass,
        *,
        region: str,
        account: str,
        compression_level: int = 3,
    ) -> None:
        self.mapper = mapper
        self.event_class = event_class
        self.region = region
        self.account = account
        self.compression_level = compression_level
        self.schema = schema_for(event_class, mapper.version)
        self._shape = RowShape(self.schema)

    # -- writing -----------------------------------------------------------------------

    def split(self, batch: Sequence[Event]) -> list[tuple[Partitioned, list[int]]]:
        groups: dict[DayPartition, list[int]] = {}
        for position, event in enumerate(batch):
            day = event_time(event).strftime("%Y%m%d")
            groups.setdefault(DayPartition(day, self.region, self.account), []).append(position)
        return [
            (part, sorted(positions, key=lambda p: batch[p].seq))
            for part, positions in sorted(groups.items())
        ]

    def records(self, events: Sequence[Event]) -> list[tuple[Event, OcsfRecord]]:
        """Each event's record, sorted by time then seq (Security Lake wants time order)."""
        mapped = [(e, self.mapper.map(e)) for e in events]
        mapped.sort(key=lambda pair: (pair[1].time_ms, pair[0].seq))
        return mapped

    def parquet(self, records: Sequence[OcsfRecord]) -> bytes:
        rows = [self._shape(r.record) for r in records]
        table = pa.Table.from_pylist(rows, schema=self.schema)
        out = io.BytesIO()
        pq.write_table(
            table,
            out,
            compression="zstd",
            compression_level=self.compression_level,
            data_page_size=_PAGE,
            write_statistics=True,
        )
        return out.getvalue()

    def encode(
        self, key_prefix: str, partition: Partitioned, events: Sequence[Event]
    ) -> ArchiveObject:
        if not events:
            raise ValueError("an object holds at least one event")
        mapped = self.records(events)
        data = self.parquet([record for _, record in mapped])
        info = _entry(
            partition.path(key_prefix),
            data,
            [e.seq for e in events],
            [record.time_ms for _, record in mapped],
        )
        members = frozenset((e.seq, e.source, e.event_id) for e in events)
        return ArchiveObject(info, members, data)

    # -- reading back ------------------------------------------------------------------

    def _table(self, data: bytes, columns: list[str] | None = None) -> pa.Table:
        try:
            return pq.read_table(io.BytesIO(data), columns=columns)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise ValueError(f"unreadable Parquet object ({type(exc).__name__})") from None

    @staticmethod
    def _members(table: pa.Table) -> list[Member]:
        if "metadata" not in table.column_names:
            raise ValueError("Parquet object without an OCSF metadata column")
        members: list[Member] = []
        for meta in table.column("metadata").to_pylist():
            seq = (meta or {}).get("sequence")
            source, uid = (meta or {}).get("log_name"), (meta or {}).get("uid")
            if not (isinstance(seq, int) and isinstance(source, str) and isinstance(uid, str)):
                raise ValueError("Parquet row without metadata.sequence / log_name / uid")
            members.append((seq, source, uid))
        return members

    def decode(self, key: str, data: bytes) -> ArchiveObject:
        table = self._table(data, ["time", "metadata"])
        members = self._members(table)
        if "time" not in table.column_names:
            raise ValueError("Parquet object without an OCSF time column")
        times = [t for t in table.column("time").to_pylist() if isinstance(t, int)]
        if not members or len(times) != len(members):
            raise ValueError("empty Parquet object, or rows without time")
        info = _entry(key, data, [m[0] for m in members], times, named=True)
        return ArchiveObject(info, frozenset(members))

    def member_contents(self, data: bytes) -> dict[Member, bytes]:
        table = self._table(data)
        rows: list[dict[str, Any]] = table.to_pylist()
        members = self._members(table)  # one per row
        return {m: _CANONICAL.encode(row).encode() for m, row in zip(members, rows, strict=True)}

    def content(self, event: Event) -> bytes:
        """The row ``event`` becomes, as read back from Parquet (canonical JSON)."""
        row = self._shape(self.mapper.map(event).record)
        read_back = pa.Table.from_pylist([row], schema=self.schema).to_pylist()[0]
        return _CANONICAL.encode(read_back).encode()

    def parse_name(self, key: str) -> tuple[int, int] | None:
        return parse_object_name(key)
