"""One batch through the Logs Ingestion API: plan the calls, post, split, bisect. Blocking.

- rows are grouped by stream and packed into calls under ``max_call_bytes``
  (uncompressed; a row alone over it is refused up front, permanently);
- 413 (the service's limit is lower than we thought): the call is split in halves until
  the halves pass; a single row that still gets 413 is refused permanently;
- 400: the service refused something in the call. The call is bisected until single
  rows fail alone; then an empty call to the same stream tells the record's fault (the
  stream takes ``[]``: dead-letter that one record) from the stream's (``[]`` refused
  too: the whole sink is unavailable, nothing is dead-lettered);
- any other error stops the batch: every row not yet acknowledged carries it, so a 429
  or a 401 is never charged to events the service did take.

Pipelined: the calls are the same as when the whole batch is planned first (each
stream's rows packed greedily, in order), but each is gzipped as soon as it is full, and
every call after the first is built and gzipped on the sink's encoder thread while the one
before is posted: a batch that needs several calls overlaps its encoding with the
service's work.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator, Mapping, Sequence
from concurrent.futures import Executor

import structlog

from sinks.base import Event, PermanentSinkError, SinkError, SinkUnavailableError
from sinks.sentinel._client import CallTooLargeError, IngestionApi, RecordsRefusedError
from sinks.sentinel.config import SentinelConfig
from sinks.sentinel.encoder import CallPacker, Row, array_bytes, body_for, row_for
from sinks.sentinel.health import probe_stream

__all__ = ["Delivery"]

log = structlog.get_logger("bighub_siem.sinks.sentinel")

Call = tuple[str, list[int], bytes]


class Delivery:
    """Delivers one batch; ``run`` returns the failed positions (empty: all delivered).

    Args:
        encoder: where the next call is encoded while this one is posted; ``None``
            encodes each call just before it is posted.
    """

    def __init__(
        self,
        api: IngestionApi,
        config: SentinelConfig,
        batch: Sequence[Event],
        encoder: Executor | None = None,
    ) -> None:
        self.api = api
        self.config = config
        self.batch = batch
        self.encoder = encoder
        self.rows: dict[int, Row] = {}
        self.failures: dict[int, SinkError] = {}
        self.done: set[int] = set()
        self.calls = 0
        self._stream_ok: dict[str, bool] = {}

    def run(self) -> dict[int, SinkError]:
        calls = self._encoded(self.config.streams.model_dump())
        try:
            if self.encoder is None:
                for stream, positions, body in calls:
                    self._post(stream, positions, body)
            else:
                self._pipelined(calls, self.encoder)
        except SinkError as exc:  # stop: the rest waits (uncharged when unavailable)
            for pos in range(len(self.batch)):
                if pos not in self.done and pos not in self.failures:
                    self.failures[pos] = exc
        finally:
            calls.close()
        return self.failures

    def _pipelined(self, calls: Iterator[Call], encoder: Executor) -> None:
        """Post each call while the encoder builds the next (only one runs the generator
        at a time: the next is asked for once the one before has come back).

        The first call is built on this thread: there is nothing in flight to overlap it
        with, and a batch of one call then never waits for the encoder to be woken.
        """
        call = next(calls, None)
        while call is not None:
            pending = encoder.submit(next, calls, None)
            try:
                self._post(*call)
            except BaseException:
                if not pending.cancel():
                    with contextlib.suppress(Exception):  # leaving on the post's error
                        pending.result()  # the generator must be idle before it is closed
                raise
            call = pending.result()

    def _encoded(self, streams: Mapping[str, str]) -> Generator[Call, None, None]:
        """The batch's calls in the order they fill up, each as soon as it is full."""
        limit = self.config.max_call_bytes
        packers: dict[str, CallPacker] = {}
        for pos, event in enumerate(self.batch):
            try:
                row = row_for(event, streams)
            except ValueError:
                self.failures[pos] = PermanentSinkError("the stored body is not JSON")
                continue
            self.rows[pos] = row
            packer = packers.get(row.stream) or packers.setdefault(row.stream, CallPacker(limit))
            if not packer.fits(len(row.data)):
                self.failures[pos] = PermanentSinkError(
                    f"the event's row is {len(row.data)} bytes; a call takes at most "
                    f"{limit} (max_call_bytes)"
                )
            elif (closed := packer.add(pos, len(row.data))) is not None:
                yield self._call(row.stream, closed)
        for stream, packer in packers.items():
            if (last := packer.flush()) is not None:
                yield self._call(stream, last)

    def _call(self, stream: str, positions: list[int]) -> Call:
        data = [self.rows[p].data for p in positions]
        return stream, positions, body_for(data, self.config.gzip_level)

    def _post(self, stream: str, positions: list[int], body: bytes | None = None) -> None:
        data = [self.rows[p].data for p in positions]
        self.calls += 1
        try:
            self.api.post(
                stream, body if body is not None else body_for(data, self.config.gzip_level)
            )
        except CallTooLargeError as exc:
            if len(positions) == 1:
                self.failures[positions[0]] = PermanentSinkError(
                    f"the service refuses this event's row alone as too large ({exc})"
                )
                return
            log.info(
                "sentinel_call_split", stream=stream, rows=len(positions), bytes=array_bytes(data)
            )
            self._halves(stream, positions)
            return
        except RecordsRefusedError as exc:
            if len(positions) > 1:
                self._halves(stream, positions)
                return
            self._refused(stream, positions[0], exc)
            return
        self.done.update(positions)

    def _halves(self, stream: str, positions: list[int]) -> None:
        middle = len(positions) // 2
        self._post(stream, positions[:middle])
        self._post(stream, positions[middle:])

    def _refused(self, stream: str, pos: int, exc: RecordsRefusedError) -> None:
        if stream not in self._stream_ok:
            try:
                probe_stream(self.api, stream, self.config.gzip_level)
            except RecordsRefusedError:
                self._stream_ok[stream] = False
            else:
                self._stream_ok[stream] = True
        if not self._stream_ok[stream]:
            raise SinkUnavailableError(
                f"stream {stream} refuses even an empty call ({exc}): the DCR's stream "
                "declaration does not fit this sink; see deploy/sentinel/"
            )
        event_id = self.batch[pos].event_id
        log.warning("sentinel_record_refused", stream=stream, event_id=event_id, code=exc.code)
        self.failures[pos] = PermanentSinkError(
            f"the service refused this event's row alone, while the stream takes calls ({exc})"
        )
