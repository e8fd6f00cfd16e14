"""The blocking archive writer: exactly-once objects and the manifest chain.

Exactly-once, including after a crash between an object PUT and the outbox commit:

1. Object keys derive from content (seq range + content hash) and every PUT is
   conditional (``If-None-Match: *``), so a retried identical object is never
   written twice; an existing identical object counts as delivered.
2. A re-sent batch need not be identical: the dispatcher sends again, with the
   current limits, events the sink already took (after a restart, or when recording
   the outcome failed, which the sink cannot tell apart from a first send), so it may
   hold more events or fewer. Before writing a partition, the writer reads every
   object of that partition whose seq range overlaps the batch's; events found there
   (same seq, source and event id) count as delivered and only the rest are written.
   No event ends up in two objects. Which objects a partition holds comes from one
   listing at the first write into it since open, or after a write into it failed,
   kept current with every object written since (``_known``): a batch lists nothing.
3. Every object written (or found that way and not yet chained) gets a chain entry,
   and ``write_batch`` publishes a signed manifest before it returns, so every event
   the dispatcher marks delivered is covered by a signed manifest.

The chain head is recovered from the newest manifest in the bucket when opened.
Run one writer per archive prefix. Should a second one write manifests too, the
conditional manifest PUT notices and the chain is re-read before linking, so the
chain stays one line; but the two writers' manifests interleave.

What an object holds is the business of its format (``_format.py``): gzip NDJSON for
the S3 archive, OCSF Parquet for Amazon Security Lake. Both get the same guarantees.
"""

from __future__ import annotations

import dataclasses
import queue
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Literal

import structlog

from sinks.base import Event, SinkError, SinkUnavailableError
from sinks.s3 import health
from sinks.s3._client import S3Api, object_params
from sinks.s3._format import ArchiveSettings, NdjsonFormat, ObjectFormat, Partitioned
from sinks.s3._known import KnownPartitions
from sinks.s3.config import S3Config
from sinks.s3.encoder import ArchiveObject, Member, gzip_chunks
from sinks.s3.manifest import (
    MANIFEST_DIR,
    ChainHead,
    EntryInfo,
    ManifestError,
    SignedManifest,
    build_manifest,
    key_id,
    manifest_key,
    open_manifest,
    sequence_of_key,
    sign_manifest,
)

__all__ = ["ArchiveWriter", "KeyConflictError"]

log = structlog.get_logger("bighub_siem.sinks.s3")

_RECENT_MANIFESTS = 8  # read at open: the newest is the head, all of them seed _chained
_CHAINED_MAX = 200_000  # keys remembered as chained (bounded memory)
_CACHE_MAX = 8  # decoded objects kept to skip re-reads on retries
_MANIFEST_RACES = 3


class KeyConflictError(SinkUnavailableError):
    """Our object key holds other content (tampering, or a foreign writer): the events
    wait, uncharged, until an operator investigates. Only this partition is affected."""


class ArchiveWriter:
    """Writes batches as objects and chains them. Not thread-safe: one caller at a time."""

    def __init__(
        self,
        api: S3Api,
        config: ArchiveSettings,
        *,
        clock: Callable[[], float],
        object_format: ObjectFormat | None = None,
    ) -> None:
        if object_format is None:
            if not isinstance(config, S3Config):
                raise TypeError("an ArchiveWriter without an S3Config needs an object_format")
            object_format = NdjsonFormat.for_config(config)
        self.api = api
        self.config = config
        self.clock = clock
        self.format = object_format
        self._key = config.private_key()
        self._key_id = key_id(self._key.public_key())
        self._prefix = config.key_prefix()
        self._head: ChainHead | None = None
        self._pending: list[EntryInfo] = []
        self._chained: OrderedDict[str, str] = OrderedDict()  # key -> sha256
        self._cache: OrderedDict[str, ArchiveObject] = OrderedDict()
        self._known = KnownPartitions(parse=self.format.parse_name)
        # gzip runs here while the writer builds the next lines: zlib releases the GIL.
        name = getattr(config, "name", "archive")
        self._zip = ThreadPoolExecutor(1, thread_name_prefix=f"s3-{name}-gzip")
        if isinstance(self.format, NdjsonFormat):
            self.format = dataclasses.replace(self.format, compress=self._compress)

    # -- opening and probing -----------------------------------------------------------

    def open(self) -> None:
        """Check access (write the marker once) and recover the chain head."""
        if not self.probe():
            log.warning(
                "s3_unconditional_writes_accepted",
                prefix=self.config.prefix,
                detail="the store ignores If-None-Match; allow_unconditional_writes accepts it",
            )
        self._load_head()

    def probe(self) -> bool:
        """What a send needs: the bucket answers, accepts our writes and honours
        conditional writes (see ``health``); False when the last is accepted missing."""
        return health.check(self.api, self.config, self._extra(kind="marker"))

    def _load_head(self) -> None:
        recent: list[SignedManifest] = []
        public = self._key.public_key()
        for key in self.api.keys(self._prefix + MANIFEST_DIR, limit=_RECENT_MANIFESTS):
            sequence = sequence_of_key(key)
            data = self.api.get(key) if sequence is not None else None
            if data is None:
                continue
            try:
                manifest = open_manifest(data, public)
                if (
                    manifest.sequence != sequence
                    or manifest.body.get("prefix") != self.config.prefix
                ):
                    raise ManifestError("its content does not belong at this key")
            except ManifestError as exc:
                if not recent:
                    # Extending a chain whose newest link is broken would hide the damage.
                    raise SinkUnavailableError(
                        f"newest manifest {key} is invalid ({exc}); refusing to extend the "
                        "chain: run verify-archive and investigate"
                    ) from None
                log.warning("manifest_invalid", key=key, error=str(exc))
                continue
            recent.append(manifest)
        self._head = recent[0].head() if recent else ChainHead()
        for manifest in reversed(recent):
            for entry in manifest.entries:
                self._remember_chained(str(entry["key"]), str(entry["sha256"]))
        log.info("archive_opened", sequence=self._head.sequence, entries=self._head.next_index)

    # -- writing -----------------------------------------------------------------------

    def write_batch(self, batch: Sequence[Event]) -> dict[int, SinkError]:
        """Archive ``batch``, one object per partition, then publish a manifest.

        Returns:
            batch position -> error for events of partitions that failed (empty when
            all went well).

        Raises:
            SinkError: the manifest could not be published; nothing may be marked
                delivered (the objects stay and are recognised on the retry).
        """
        if self._head is None:
            self._load_head()
        failures: dict[int, SinkError] = {}
        down: SinkUnavailableError | None = None
        for partition, positions in self.format.split(batch):
            if down is None:
                try:
                    self._write_partition(partition, [batch[p] for p in positions])
                    continue
                except KeyConflictError as exc:
                    failures.update((p, exc) for p in positions)
                except SinkUnavailableError as exc:
                    down = exc  # the rest would fail the same way; do not hammer it
                    failures.update((p, exc) for p in positions)
                except SinkError as exc:
                    failures.update((p, exc) for p in positions)
                # The failed PUT may have stored its object all the same (answer lost):
                # list this partition again before the next write into it.
                self._known.forget(partition.path(self._prefix))
                continue
            failures.update((p, down) for p in positions)
        self.flush()
        return failures

    def _write_partition(self, partition: Partitioned, events: Sequence[Event]) -> None:
        wanted: dict[Member, Event] = {(e.seq, e.source, e.event_id): e for e in events}
        held = self._already_archived(partition, wanted)
        remaining = [event for member, event in wanted.items() if member not in held]
        if not remaining:
            return
        obj = self.format.encode(self._prefix, partition, remaining)
        if self._put(obj):
            self._cache_put(ArchiveObject(obj.info, obj.members))
            self._known.add(partition.path(self._prefix), obj.key)
            self._chain(obj.info)
            log.info("object_archived", key=obj.key, events=obj.info.events, size=obj.info.size)
            return
        # The key exists: identical content is a delivery, anything else is tampering.
        existing = self._read(obj.key, fresh=True)
        # The key names the content's SHA-256: only the very same bytes may stand there.
        if existing is None or existing.info.sha256 != obj.info.sha256:
            raise KeyConflictError(
                f"{obj.key} exists with other content; refusing to overwrite: "
                "run verify-archive and investigate"
            )
        self._known.add(partition.path(self._prefix), obj.key)
        self._chain(existing.info)

    def _already_archived(
        self, partition: Partitioned, wanted: Mapping[Member, Event]
    ) -> set[Member]:
        members = set(wanted)
        low = min(m[0] for m in members)
        high = max(m[0] for m in members)
        held: set[Member] = set()
        path = partition.path(self._prefix)
        if not self._known.known(path):
            self._known.learn(path, self.api.keys(path))
        for key in self._known.overlapping(path, low, high):
            existing = self._read(key)
            if existing is None:
                continue
            overlap = existing.members & members
            if overlap and key not in self._chained:
                # Written before a crash and never chained: adopt it only if every line
                # is exactly what we would write now, or an edit made meanwhile would be
                # signed into the chain and verify-archive would call it clean.
                self._check_content(key, {m: wanted[m] for m in overlap})
            if overlap:
                held |= overlap
                self._chain(existing.info)
                log.info("archive_recovered", key=key, events=len(overlap))
        return held

    def _compress(self, chunks: Iterable[bytes], level: int) -> bytes:
        """``gzip_chunks`` on the helper thread, fed chunk by chunk as they are built."""
        fed: queue.Queue[bytes | None] = queue.Queue()

        def feed() -> Iterator[bytes]:
            while (chunk := fed.get()) is not None:
                yield chunk

        future = self._zip.submit(gzip_chunks, feed(), level)
        try:
            for chunk in chunks:
                fed.put(chunk)
        finally:
            fed.put(None)  # also when building a line failed: the thread must finish
        return future.result()

    def close(self) -> None:
        """Release the helper thread (it holds nothing that needs flushing)."""
        self._zip.shutdown(wait=False)

    def _check_content(self, key: str, events: Mapping[Member, Event]) -> None:
        data = self.api.get(key)
        try:
            stored = self.format.member_contents(data) if data is not None else {}
        except ValueError:
            stored = {}
        if any(stored.get(m) != self.format.content(e) for m, e in events.items()):
            raise KeyConflictError(
                f"{key} holds these events with other content; refusing to adopt it: "
                "run verify-archive and investigate"
            )

    def _put(self, obj: ArchiveObject) -> bool:
        extra = self._extra(kind="data")
        if obj.info.size > self.config.multipart_threshold_bytes:
            return self.api.multipart_new(
                obj.key, obj.data, self.config.multipart_part_bytes, **extra
            )
        return self.api.put_new(obj.key, obj.data, **extra)

    def _read(self, key: str, *, fresh: bool = False) -> ArchiveObject | None:
        """An existing object's contents, or None if gone or not trustworthy."""
        if not fresh and key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        data = self.api.get(key)
        if data is None:
            return None
        try:
            obj = self.format.decode(key, data)
        except ValueError as exc:
            log.error("archive_object_unreadable", key=key, error=str(exc))
            return None
        known = self._chained.get(key)
        if known is not None and known != obj.info.sha256:
            # Its events do not count as archived: they are written again, and the
            # verifier reports the altered object.
            log.error("archive_object_altered", key=key)
            return None
        self._cache_put(obj)
        return obj

    def _cache_put(self, obj: ArchiveObject) -> None:
        self._cache[obj.key] = obj
        self._cache.move_to_end(obj.key)
        while len(self._cache) > _CACHE_MAX:
            self._cache.popitem(last=False)

    # -- the chain ---------------------------------------------------------------------

    def _remember_chained(self, key: str, sha256: str) -> None:
        self._chained[key] = sha256
        self._chained.move_to_end(key)
        while len(self._chained) > _CHAINED_MAX:
            self._chained.popitem(last=False)

    def _chain(self, info: EntryInfo) -> None:
        if info.key in self._chained:
            return
        self._pending.append(info)
        self._remember_chained(info.key, info.sha256)

    def flush(self) -> None:
        """Publish the pending entries as the next signed manifest (no-op when none).

        Raises:
            SinkError: not published; the entries stay pending.
        """
        for _ in range(_MANIFEST_RACES):
            if not self._pending:
                return
            if self._head is None:
                self._load_head()
            head = self._head if self._head is not None else ChainHead()
            body = build_manifest(
                prefix=self.config.prefix,
                previous=head,
                infos=self._pending,
                created_at=self._now().isoformat(timespec="seconds").replace("+00:00", "Z"),
                signer_key_id=self._key_id,
            )
            data, digest = sign_manifest(body, self._key)
            key = manifest_key(self._prefix, body["sequence"])
            if self.api.put_new(key, data, **self._extra(kind="manifest")):
                written: ChainHead | None = ChainHead(
                    body["sequence"], digest, body["chain"]["head"], body["chain"]["end_index"]
                )
            else:
                written = self._earlier_attempt(key, body)
            if written is not None:
                self._head = written
                log.info("manifest_written", key=key, entries=len(self._pending))
                self._pending.clear()
                return
            # Another writer took this sequence: re-read the chain and link onto it.
            log.warning("manifest_race", key=key)
            self._head = None
        raise SinkUnavailableError(
            "another writer keeps extending this archive's chain; one writer per prefix"
        )

    def _earlier_attempt(self, key: str, body: dict[str, Any]) -> ChainHead | None:
        """The head after ``key`` if it holds this very manifest from an earlier attempt
        (a PUT that succeeded but whose answer was lost), else None."""
        data = self.api.get(key)
        if data is None:
            return None
        try:
            theirs = open_manifest(data, self._key.public_key())
        except ManifestError:
            return None
        same = theirs.body["entries"] == body["entries"] and theirs.body["chain"] == body["chain"]
        return theirs.head() if same else None

    # -- request settings --------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=timezone.utc)

    def _extra(self, *, kind: Literal["data", "manifest", "marker"]) -> dict[str, Any]:
        params = object_params(self.config, kind=kind, now=self.clock())
        if kind == "data":
            params["ContentType"] = self.format.content_type
        return params
