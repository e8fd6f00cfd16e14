"""Indexer-ack bookkeeping that survives a restart: one small JSON file per sink.

The file holds the sink's ack channel and one record per HEC request whose outcome
is not settled yet::

    {"version": 1, "channel": "<GUID>", "last_ack_id": 7,
     "records": [{"ack_id": 7, "events": ["<seq>:<event_id>", ...],
                  "sent_at": 1795939200.5, "confirmed_at": null}, ...]}

- a record is written (file replaced atomically, fsynced) as soon as HEC returns
  the request's ackId, before the sink waits for the ack;
- ``confirmed_at`` is written when HEC confirms the ackId, before ``send`` returns,
  so a crash between that and the dispatcher marking the rows delivered does not
  lead to a resend: after a restart those events are reported delivered at once;
- HEC numbers ackIds upwards per channel. An ackId not above ``last_ack_id`` means
  HEC forgot the channel (restart, idle clean-up): every unconfirmed record is then
  lost and its events are sent again (``accept`` returns them);
- a record is dropped when a ``send`` starts whose batch carries none of its events
  (and, if unconfirmed, its ack timeout is over). The dispatcher claims the next batch
  only after marking the last one, and after a restart the unmarked rows are the
  oldest, so they come first: the file stays as small as one batch. (If marking
  fails and the rows come back only after other batches, they are sent again:
  a duplicate, never a loss.)

An exclusive ``flock`` on ``<file>.lock`` keeps two sinks or processes from sharing a
file (POSIX only, like the rest of the deployment targets).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

__all__ = ["AckRecord", "AckState", "AckStateLockedError"]

_VERSION = 1


class AckStateLockedError(RuntimeError):
    """Another sink or process holds this ack state file."""


@dataclass(frozen=True, slots=True)
class AckRecord:
    """One HEC request with indexer ack: its ackId and the events it carried."""

    ack_id: int
    events: tuple[str, ...]
    sent_at: float
    confirmed_at: float | None = None


def _record(obj: Any) -> AckRecord | None:
    if not isinstance(obj, dict):
        return None
    ack_id, events, sent_at = obj.get("ack_id"), obj.get("events"), obj.get("sent_at")
    confirmed = obj.get("confirmed_at")
    if (
        not isinstance(ack_id, int)
        or not isinstance(events, list)
        or not all(isinstance(e, str) for e in events)
        or not isinstance(sent_at, (int, float))
        or not (confirmed is None or isinstance(confirmed, (int, float)))
    ):
        return None
    return AckRecord(ack_id, tuple(events), float(sent_at), confirmed)


class AckState:
    """The channel and the unsettled ack records; every change is saved before use.

    Methods are synchronous file I/O; the sink calls them through ``asyncio.to_thread``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.channel = ""
        self.last_ack_id = -1
        self.records: list[AckRecord] = []
        self._lock: IO[bytes] | None = None

    # -- lifecycle --------------------------------------------------------------------

    def open(self) -> list[str]:
        """Lock and read the file (or start a new channel). Returns warnings to log.

        Raises:
            AckStateLockedError: another process uses this file.
            OSError: the directory cannot be created or the file read.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock").open("ab")
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise AckStateLockedError(
                f"{self.path} is in use by another sink or process; give each sink its own"
            ) from None
        self._lock = lock
        warnings: list[str] = []
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raw = None
        if raw is not None:
            try:
                self._load(json.loads(raw))
            except (ValueError, UnicodeDecodeError) as exc:
                # Unreadable state costs duplicates (events are re-sent), never loss.
                aside = self.path.with_name(self.path.name + ".corrupt")
                os.replace(self.path, aside)
                warnings.append(f"ack state unreadable ({exc}); moved to {aside}")
                self.channel, self.last_ack_id, self.records = "", -1, []
        if not self.channel:
            self.channel = str(uuid.uuid4())
            self.save()
        return warnings

    def _load(self, obj: Any) -> None:
        if not isinstance(obj, dict) or obj.get("version") != _VERSION:
            raise ValueError("not a version 1 ack state")
        channel = obj.get("channel")
        if not isinstance(channel, str):
            raise ValueError("no channel")
        uuid.UUID(channel)  # raises ValueError when it is not a GUID
        records = obj.get("records")
        if not isinstance(records, list):
            raise ValueError("no records list")
        last = obj.get("last_ack_id", -1)
        if not isinstance(last, int):
            raise ValueError("last_ack_id is not a number")
        self.channel = channel
        self.last_ack_id = last
        self.records = []
        for item in records:
            rec = _record(item)
            if rec is None:
                raise ValueError("malformed record")
            self.records.append(rec)

    def close(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    # -- changes (each followed by save() by the caller) -------------------------------

    def pending(self) -> dict[int, AckRecord]:
        """Unconfirmed records by ackId (unique: a reset voids the older ones)."""
        return {r.ack_id: r for r in self.records if r.confirmed_at is None}

    def confirmed_events(self) -> set[str]:
        return {e for r in self.records if r.confirmed_at is not None for e in r.events}

    def accept(self, ack_id: int, events: Iterable[str], now: float) -> list[AckRecord]:
        """Record a new ackId; return the unconfirmed records a counter reset made void."""
        lost: list[AckRecord] = []
        if ack_id <= self.last_ack_id:
            lost = list(self.pending().values())
            self.forget(r.ack_id for r in lost)
        self.last_ack_id = ack_id
        self.records.append(AckRecord(ack_id, tuple(events), now))
        return lost

    def confirm(self, ack_ids: Collection[int], now: float) -> None:
        self.records = [
            replace(r, confirmed_at=now) if r.confirmed_at is None and r.ack_id in ack_ids else r
            for r in self.records
        ]

    def forget(self, ack_ids: Iterable[int]) -> None:
        """Drop the unconfirmed records with these ackIds."""
        gone = set(ack_ids)
        self.records = [
            r for r in self.records if r.confirmed_at is not None or r.ack_id not in gone
        ]

    def prune(self, now: float, current: Collection[str], ack_timeout: float) -> bool:
        """Drop records ``current`` (the batch being sent) does not need; True if any went."""
        keep = [
            r
            for r in self.records
            if any(e in current for e in r.events)
            or (r.confirmed_at is None and now < r.sent_at + ack_timeout)
        ]
        changed = len(keep) != len(self.records)
        self.records = keep
        return changed

    # -- the file -----------------------------------------------------------------------

    def save(self) -> None:
        """Replace the file atomically: write a temp file, fsync, rename, fsync the dir."""
        data = {
            "version": _VERSION,
            "channel": self.channel,
            "last_ack_id": self.last_ack_id,
            "records": [
                {
                    "ack_id": r.ack_id,
                    "events": list(r.events),
                    "sent_at": r.sent_at,
                    "confirmed_at": r.confirmed_at,
                }
                for r in self.records
            ],
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("wb") as fh:
            fh.write(json.dumps(data, separators=(",", ":")).encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
