"""What the writer knows each partition holds, so it lists a partition once, not per batch.

Per partition: the seq span of every object in it (the object name carries its first
and last seq), learnt from one listing at the first write into the partition since
the writer opened, and kept current with every object the writer stores or finds
after that. A batch then reads only the objects whose span overlaps its own seqs
(nearly always none: seqs increase), instead of listing the whole partition again.

Three things make a partition unknown again, so the next write lists it afresh:
a write into it that failed (the PUT may have stored the object though its answer
was lost), eviction (at most ``max_partitions`` are remembered, least recently used
first), and a new writer (a restart). Memory: one small tuple per object of the
remembered partitions.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

from sinks.s3.encoder import parse_object_name

__all__ = ["KnownPartitions"]


class KnownPartitions:
    """Object spans per partition path (``<prefix><category>/dt=../hour=../``)."""

    def __init__(
        self,
        max_partitions: int = 64,
        *,
        parse: Callable[[str], tuple[int, int] | None] = parse_object_name,
    ) -> None:
        self.max_partitions = max_partitions
        self._parse = parse  # the object format's names (NDJSON, or Security Lake Parquet)
        # path -> {key: (first seq, last seq)}
        self._parts: OrderedDict[str, dict[str, tuple[int, int]]] = OrderedDict()

    def known(self, path: str) -> bool:
        return path in self._parts

    def learn(self, path: str, keys: Iterable[str]) -> None:
        """Everything a listing of ``path`` returned (keys the sink did not make are skipped)."""
        spans: dict[str, tuple[int, int]] = {}
        for key in keys:
            span = self._parse(key)
            if span is not None:
                spans[key] = span
        self._parts[path] = spans
        self._touch(path)

    def add(self, path: str, key: str) -> None:
        """An object stored (or found) in a partition whose listing we hold."""
        spans = self._parts.get(path)
        span = self._parse(key)
        if spans is None or span is None:
            return
        spans[key] = span
        self._touch(path)

    def forget(self, path: str) -> None:
        self._parts.pop(path, None)

    def overlapping(self, path: str, low: int, high: int) -> list[str]:
        """Keys of the objects in ``path`` whose seq span meets ``[low, high]``."""
        spans = self._parts.get(path, {})
        return [key for key, (first, last) in spans.items() if first <= high and last >= low]

    def _touch(self, path: str) -> None:
        self._parts.move_to_end(path)
        while len(self._parts) > self.max_partitions:
            self._parts.popitem(last=False)
