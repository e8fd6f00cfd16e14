"""What the archive writer needs from an object format, and the S3 archive's own format.

The exactly-once writer and the manifest chain (``_archive.py``) do not care what an
object holds. A format tells them how a batch splits into partitions, how events
become one object (named by its seq range and content hash), and how to read back
which events an existing object holds. Two formats exist: gzip NDJSON here (the S3
archive, export or OCSF lines) and OCSF Parquet (``sinks.security_lake``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sinks.base import Event
from sinks.ocsf import Mapper, mapper_for
from sinks.s3.config import S3Config
from sinks.s3.encoder import (
    ArchiveObject,
    Gzip,
    Member,
    Partition,
    archive_line,
    decode_object,
    encode_object,
    gzip_chunks,
    member_lines,
    parse_object_name,
    split_by_partition,
)

__all__ = ["ArchiveSettings", "NdjsonFormat", "ObjectFormat", "Partitioned"]


class Partitioned(Protocol):
    """A partition of the archive: a folder under the key prefix."""

    def path(self, key_prefix: str) -> str: ...


class ObjectFormat(Protocol):
    """How events become archive objects and how objects are read back."""

    @property
    def content_type(self) -> str: ...

    def split(self, batch: Sequence[Event]) -> Sequence[tuple[Partitioned, list[int]]]:
        """Batch positions per partition, each list in seq order."""

    def encode(
        self, key_prefix: str, partition: Partitioned, events: Sequence[Event]
    ) -> ArchiveObject:
        """The object holding ``events``; its key derives from the seq range and content."""

    def decode(self, key: str, data: bytes) -> ArchiveObject:
        """Which events an object holds. Raises ``ValueError`` for one it cannot read."""

    def member_contents(self, data: bytes) -> dict[Member, bytes]:
        """Each event's stored form (compared with ``content`` before adopting an
        object left unchained by a crash). Raises ``ValueError`` like ``decode``."""

    def content(self, event: Event) -> bytes:
        """What ``member_contents`` holds for ``event`` when this format wrote it."""

    def parse_name(self, key: str) -> tuple[int, int] | None:
        """The seq range an object key names, or None for keys this format did not make."""


class ArchiveSettings(Protocol):
    """What the writer reads from its sink's config (``S3Config`` has all of it)."""

    @property
    def prefix(self) -> str: ...
    @property
    def multipart_threshold_bytes(self) -> int: ...
    @property
    def multipart_part_bytes(self) -> int: ...
    @property
    def storage_class(self) -> str: ...
    @property
    def server_side_encryption(self) -> str: ...
    @property
    def kms_key_id(self) -> str | None: ...
    @property
    def object_lock_mode(self) -> str: ...
    @property
    def retention_days(self) -> int | None: ...
    @property
    def allow_unconditional_writes(self) -> bool: ...
    def key_prefix(self) -> str: ...
    def private_key(self) -> Ed25519PrivateKey: ...


@dataclass(frozen=True, slots=True)
class NdjsonFormat:
    """gzip NDJSON in category / day / hour partitions (see ``sinks.s3.encoder``)."""

    level: int = 6
    mapper: Mapper | None = None  # set: OCSF lines instead of archive records
    compress: Gzip = gzip_chunks  # the writer runs it on a helper thread

    @classmethod
    def for_config(cls, config: S3Config) -> NdjsonFormat:
        return cls(config.gzip_level, mapper_for(config))

    @property
    def content_type(self) -> str:
        return "application/gzip"

    def split(self, batch: Sequence[Event]) -> list[tuple[Partitioned, list[int]]]:
        return list(split_by_partition(batch).items())

    def encode(
        self, key_prefix: str, partition: Partitioned, events: Sequence[Event]
    ) -> ArchiveObject:
        if not isinstance(partition, Partition):
            raise TypeError("NdjsonFormat encodes its own partitions")
        return encode_object(
            key_prefix,
            partition,
            events,
            level=self.level,
            line=self.content,
            compress=self.compress,
        )

    def decode(self, key: str, data: bytes) -> ArchiveObject:
        return decode_object(key, data)

    def member_contents(self, data: bytes) -> dict[Member, bytes]:
        return member_lines(data)

    def content(self, event: Event) -> bytes:
        return archive_line(event) if self.mapper is None else self.mapper.map(event).json()

    def parse_name(self, key: str) -> tuple[int, int] | None:
        return parse_object_name(key)
