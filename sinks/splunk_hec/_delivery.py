"""One ``send``: encode, post in requests, split or isolate as HEC answers, await acks.

What a send guarantees (the dispatcher records delivery only after it returns):

- ``ack = false``: an event counts as delivered once HEC answered code 0 for the
  request carrying it (HEC has it in its pipeline; Splunk may still lose it if an
  indexer crashes before writing it).
- ``ack = true``: an event counts as delivered only once HEC confirmed the ackId of
  the request carrying it through ``/services/collector/ack``. An ackId not
  confirmed within ``ack_timeout_seconds`` fails its events (retryable), so they
  are sent again. Pending ackIds are kept in a state file (``_ackstate``), so after
  a restart the sink asks HEC about them before sending those events again.
- Either way delivery is at least once: a timeout after HEC took a request, an
  ack confirmed but its answer lost, or the events HEC took ahead of a rejected
  one in ack mode can reach Splunk twice. Every event carries ``event_id`` as an
  indexed field, so ``| dedup event_id`` removes repeats.

Inside one send the sink (never the dispatcher) splits a request HEC found too big
(413) and isolates events HEC rejects (codes 6, 12, 13, 15): only those are
dead-lettered. See ``_client`` for the mapping of every HEC code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx
import structlog

from sinks.base import (
    Event,
    PartialDeliveryError,
    PermanentSinkError,
    RetryableSinkError,
    SinkError,
    SinkUnavailableError,
)
from sinks.splunk_hec._ackstate import AckState, AckStateLockedError
from sinks.splunk_hec._client import Action, HecClient, classify, parse_reply, transport_error
from sinks.splunk_hec.config import SplunkHecConfig
from sinks.splunk_hec.encoder import Encoder, gzip_body, plan_pieces, plan_requests

__all__ = ["Delivery", "event_key"]

log = structlog.get_logger("bighub_siem.sinks.splunk_hec")

_FIRST_POLL_SECONDS = 0.05
# Events, or bytes of HEC objects, encoded between two yields to the event loop (about
# 0.2 ms of work on typical events; the byte bound keeps large events from stalling it).
_SLICE_EVENTS = 50
_SLICE_BYTES = 256 * 1024


def event_key(event: Event) -> str:
    """How the ack state names an event: store sequence and event id."""
    return f"{event.seq}:{event.event_id}"


@dataclass(slots=True)
class _Round:
    """The bookkeeping of one ``send``: what happened to each batch position."""

    keys: list[str]
    bodies: list[bytes]
    delivered: set[int] = field(default_factory=set)
    failed: dict[int, SinkError] = field(default_factory=dict)
    waiting: dict[int, list[int]] = field(default_factory=dict)  # ackId -> positions
    deadlines: dict[int, float] = field(default_factory=dict)  # ackId -> give-up time
    halt: SinkError | None = None  # set when HEC refuses or is busy: send no more

    def settled(self, pos: int) -> bool:
        return pos in self.delivered or pos in self.failed

    def fail(self, positions: Sequence[int], error: SinkError) -> None:
        for pos in positions:
            self.failed.setdefault(pos, error)


class Delivery:
    """Delivers batches through one client and, with ``ack``, one ack state.

    The ack state file is opened at the first send (not at start), so a probe or a
    health check never needs the file another process holds.
    """

    def __init__(
        self, config: SplunkHecConfig, client: HecClient, *, clock: Callable[[], float]
    ) -> None:
        self.config = config
        self.name = config.name
        self.client = client
        self.state: AckState | None = None
        self.clock = clock
        self._encoder = Encoder.from_config(config)
        self._ack_checked = False
        self._refused = ""  # the last hold reason logged, so an outage logs once
        self._lock = asyncio.Lock()  # one send (or ack probe) at a time on the channel

    @property
    def channel(self) -> str | None:
        return self.state.channel if self.state is not None else None

    async def _open_state(self) -> AckState:
        """The ack state, opened (and locked) on first use.

        Raises:
            SinkUnavailableError: the file is held by another process or unusable; the
                events wait uncharged and /readyz says why.
        """
        if self.state is not None:
            return self.state
        state = AckState(self.config.state_path())
        try:
            warnings = await asyncio.to_thread(state.open)
        except (AckStateLockedError, OSError) as exc:
            raise SinkUnavailableError(f"ack state {self.config.state_path()}: {exc}") from exc
        for warning in warnings:
            log.warning("splunk_hec_ack_state", sink=self.name, warning=warning)
        self.state = state
        return state

    def close_state(self) -> None:
        state, self.state = self.state, None
        if state is not None:
            state.close()

    async def _save_state(self, state: AckState) -> None:
        """Write the ack state; a local disk problem holds the events (uncharged)
        instead of surfacing as an unexpected error that would dead-letter them."""
        try:
            await asyncio.to_thread(state.save)
        except OSError as exc:
            raise SinkUnavailableError(
                f"cannot write the ack state file: {exc.strerror or type(exc).__name__}"
            ) from exc

    async def send(self, batch: Sequence[Event]) -> None:
        """Deliver ``batch``; return only when HEC took (with ack: indexed) every event.

        Raises:
            SinkUnavailableError: HEC refuses the token, index or channel; nothing
                of the batch was delivered.
            RetryableSinkError: HEC is busy or unreachable; nothing was delivered.
            PartialDeliveryError: the listed positions failed (rejected events as
                ``PermanentSinkError``), every other one was delivered.
        """
        async with self._lock:
            if self.config.ack:
                await self._open_state()
            await self._send(batch)

    async def _send(self, batch: Sequence[Event]) -> None:
        # Event keys name events in the ack state only: without ack they are not built.
        keys = [event_key(e) for e in batch] if self.state is not None else []
        rnd = _Round(keys=keys, bodies=[b""] * len(batch))
        todo = list(range(len(batch)))
        if self.state is not None:
            await self._recover(rnd)
            awaited = {pos for positions in rnd.waiting.values() for pos in positions}
            todo = [i for i in todo if not rnd.settled(i) and i not in awaited]
            if todo and not self._ack_checked:
                await self._check_ack(rnd, todo)
        # The next piece is encoded (and gzipped) while the request before it is on the
        # wire: HEC's time and ours overlap instead of adding up.
        pieces = plan_pieces(todo)
        ahead = (
            asyncio.ensure_future(self._prepare(batch, rnd, pieces[0], alone=True))
            if pieces
            else None
        )
        done = 0
        try:
            while ahead is not None:
                requests, failed = await ahead
                rnd.failed.update(failed)
                done += 1
                ahead = (
                    asyncio.ensure_future(self._prepare(batch, rnd, pieces[done]))
                    if done < len(pieces)
                    else None
                )
                for group, body in requests:
                    await self._post(rnd, group, batch, body)
        finally:
            if ahead is not None:  # the send ended early: the next piece is not needed
                ahead.cancel()
        if rnd.waiting:
            await self._await_acks(rnd)
        self._finish(rnd, batch)

    async def _prepare(
        self, batch: Sequence[Event], rnd: _Round, piece: list[int], *, alone: bool = False
    ) -> tuple[list[tuple[list[int], bytes]], dict[int, SinkError]]:
        """Encode ``piece`` and build its request bodies (gzipped when configured).

        Encoding runs on the event loop in slices, yielding between them, so a request
        in flight is answered at once and ingress never waits more than a slice. (On a
        thread it held the GIL while the loop had a response to read: the request
        before it took half as long again.) gzip runs on a thread, where zlib releases
        the GIL, while a request is in flight; ``alone`` (the first piece: nothing to
        overlap with) gzips its first request in place when it is small, sparing the
        hand-off (~0.1 ms).

        Returns the requests (positions, body) and the events that cannot be encoded.
        """
        encode = self._encoder.event
        bodies = rnd.bodies
        failed: dict[int, SinkError] = {}
        count, budget = 0, _SLICE_BYTES
        for pos in piece:
            if count == _SLICE_EVENTS or budget <= 0:
                await asyncio.sleep(0)  # an answer in flight, or ingress, runs now
                count, budget = 0, _SLICE_BYTES
            count += 1
            try:
                bodies[pos] = encode(batch[pos])
            except (ValueError, TypeError) as exc:  # a body that is not JSON
                failed[pos] = PermanentSinkError(f"cannot encode for HEC: {exc}")
                continue
            budget -= len(bodies[pos])
        ready = [pos for pos in piece if pos not in failed] if failed else piece
        sizes = {pos: len(bodies[pos]) for pos in ready}
        requests: list[tuple[list[int], bytes]] = []
        for group in plan_requests(sizes, ready, self.config.max_request_bytes):
            body = b"".join([bodies[i] for i in group])
            if self.config.compression == "gzip":
                if alone and not requests and len(body) <= _SLICE_BYTES:
                    body = gzip_body(body)  # no slower than a slice of encoding
                else:
                    body = await asyncio.to_thread(gzip_body, body)
            requests.append((group, body))
        return requests, failed

    async def _post(
        self, rnd: _Round, positions: list[int], batch: Sequence[Event], ready: bytes
    ) -> None:
        """Send ``positions`` as one request (``ready``: its body, prepared); split or
        isolate as HEC's answer says."""
        stack = [positions]
        while stack:
            group = stack.pop()
            if rnd.halt is not None:
                rnd.fail(group, rnd.halt)
                continue
            try:
                if group is positions:
                    response = await self.client.post_events(ready, self.channel, prepared=True)
                else:  # a part of it, after a split or an isolation
                    body = b"".join(rnd.bodies[i] for i in group)
                    response = await self.client.post_events(body, self.channel)
            except httpx.HTTPError as exc:
                self._stop(rnd, group, transport_error(exc))
                continue
            reply = parse_reply(response.content)
            verdict = classify(response.status_code, reply)
            if verdict.action is Action.DELIVERED:
                await self._took(rnd, group, reply.ack_id)
            elif verdict.action is Action.RETRY:
                self._stop(rnd, group, RetryableSinkError(verdict.reason))
            elif verdict.action is Action.BUSY:
                self._stop(rnd, group, SinkUnavailableError(verdict.reason), busy=True)
            elif verdict.action is Action.HOLD:
                # e.g. code 7 at one event of a category whose index the token may not
                # use: HEC kept the events ahead of it (without ack, that is delivery).
                k = reply.invalid_event
                if self.state is None and k is not None and 0 < k < len(group):
                    rnd.delivered.update(group[:k])
                    group = group[k:]
                self._stop(rnd, group, SinkUnavailableError(verdict.reason))
            elif len(group) == 1:
                # A lone event HEC still finds too big or invalid can never be delivered.
                self._reject(rnd, group[0], batch, verdict.reason)
            elif verdict.action is Action.SPLIT:
                log.info("splunk_hec_split", sink=self.name, events=len(group))
                half = len(group) // 2
                stack += [group[half:], group[:half]]  # the first half goes first
            elif verdict.invalid_event is not None and 0 <= verdict.invalid_event < len(group):
                k = verdict.invalid_event
                self._reject(rnd, group[k], batch, verdict.reason)
                # HEC took the events ahead of the bad one. Without ack that is delivery;
                # with ack nothing confirms them, so they go again (may show twice).
                if self.state is None:
                    rnd.delivered.update(group[:k])
                    rest = group[k + 1 :]
                else:
                    rest = group[:k] + group[k + 1 :]
                if rest:
                    stack.append(rest)
            else:  # rejected without saying which event: bisect
                half = len(group) // 2
                stack += [group[half:], group[:half]]

    def _stop(self, rnd: _Round, group: list[int], error: SinkError, *, busy: bool = False) -> None:
        """HEC refused or failed the request: fail it and send nothing more this round."""
        rnd.fail(group, error)
        if rnd.halt is None:
            rnd.halt = error
        if isinstance(error, SinkUnavailableError) and str(error) != self._refused:
            self._refused = str(error)
            # Busy is an outage that passes; a refusal needs an operator.
            (log.warning if busy else log.error)(
                "splunk_hec_busy" if busy else "splunk_hec_refused",
                sink=self.name,
                reason=str(error)[:300],
            )

    def _reject(self, rnd: _Round, pos: int, batch: Sequence[Event], reason: str) -> None:
        rnd.failed[pos] = PermanentSinkError(f"HEC rejected the event: {reason}")
        log.warning(
            "splunk_hec_event_rejected", sink=self.name, event_id=batch[pos].event_id, reason=reason
        )

    async def _took(self, rnd: _Round, group: list[int], ack_id: int | None) -> None:
        if self.state is None:
            rnd.delivered.update(group)
            return
        if ack_id is None:
            self._ack_checked = False
            self._stop(
                rnd,
                group,
                SinkUnavailableError(
                    "HEC took the events but gave no ackId: indexer acknowledgement is off "
                    "for this token; enable it or set ack = false (these events will be sent "
                    "again and may show twice)"
                ),
            )
            return
        now = self.clock()
        lost = self.state.accept(ack_id, [rnd.keys[i] for i in group], now)
        await self._save_state(self.state)
        for rec in lost:
            positions = rnd.waiting.pop(rec.ack_id, [])
            rnd.deadlines.pop(rec.ack_id, None)
            rnd.fail(
                positions,
                RetryableSinkError(f"HEC forgot ackId {rec.ack_id} (restarted?); resending"),
            )
        if lost:
            log.warning("splunk_hec_ack_reset", sink=self.name, lost_ack_ids=len(lost))
        rnd.waiting[ack_id] = group
        rnd.deadlines[ack_id] = now + self.config.ack_timeout_seconds

    # -- indexer acknowledgement ----------------------------------------------------

    async def _recover(self, rnd: _Round) -> None:
        """Settle events an earlier send (maybe before a restart) already sent."""
        state = self.state
        if state is None:
            return
        now = self.clock()
        if state.prune(now, set(rnd.keys), self.config.ack_timeout_seconds):
            await self._save_state(state)
        confirmed = state.confirmed_events()
        index = {key: pos for pos, key in enumerate(rnd.keys)}
        done = {index[k] for k in confirmed if k in index}
        rnd.delivered |= done
        for ack_id, rec in state.pending().items():
            positions = [index[e] for e in rec.events if e in index and index[e] not in done]
            if positions:
                rnd.waiting[ack_id] = positions
                rnd.deadlines[ack_id] = rec.sent_at + self.config.ack_timeout_seconds
        if done or rnd.waiting:
            log.info(
                "splunk_hec_ack_recovered",
                sink=self.name,
                confirmed_before=len(done),
                awaiting=sum(len(p) for p in rnd.waiting.values()),
            )

    async def _check_ack(self, rnd: _Round, todo: list[int]) -> None:
        """Ask HEC whether this token does indexer ack before sending with it.

        The query names the channel's next ackId: no request holds it yet, so the
        answer can only be false and consumes no confirmation, while a token without
        indexer ack is refused with code 14 before any event is sent twice.
        """
        state = self.state
        if state is None:
            return
        try:
            await self.query_acks([state.last_ack_id + 1])
        except SinkUnavailableError as exc:
            self._stop(rnd, todo, exc)
            return
        except RetryableSinkError:
            return  # unknown yet; the send itself will tell
        self._ack_checked = True

    async def query_acks(self, ack_ids: list[int]) -> dict[int, bool]:
        if self.state is None:
            raise RetryableSinkError("sink is not started")
        return await self.client.query_acks(ack_ids, self.state.channel)

    async def probe_acks(self, fresh_channel: str) -> None:
        """For ``health()``, with ``ack``: ask HEC about the ackIds still pending
        (confirmations are recorded, as a send would), or, with none pending, about the
        channel's next ackId. Before the first send (no state open) the query goes to
        ``fresh_channel``, on which no request was ever made.

        Raises:
            SinkError: HEC refuses the query (say, code 14: ack is off for the token).
        """
        if not self.config.ack or self._lock.locked():
            return  # a send in progress is asking HEC about its acks already
        async with self._lock:
            state = self.state
            if state is None:
                await self.client.query_acks([0], fresh_channel)
                return
            pending = sorted(state.pending())[:100]
            status = await self.query_acks(pending or [state.last_ack_id + 1])
            confirmed = [a for a in pending if status.get(a)]
            if confirmed:
                state.confirm(confirmed, self.clock())
                await self._save_state(state)

    async def _await_acks(self, rnd: _Round) -> None:
        """Poll until every ackId of the round is confirmed or past its deadline."""
        state = self.state
        if state is None:
            return
        delay = min(_FIRST_POLL_SECONDS, self.config.ack_poll_interval_seconds)
        while rnd.waiting:
            try:
                status = await self.query_acks(sorted(rnd.waiting))
            except SinkUnavailableError as exc:
                # Keep the records: a later send asks about them again.
                for positions in rnd.waiting.values():
                    rnd.fail(positions, exc)
                rnd.waiting.clear()
                self._stop(rnd, [], exc)
                return
            except RetryableSinkError as exc:
                log.warning("splunk_hec_ack_query_failed", sink=self.name, error=str(exc)[:300])
                status = {}
            now = self.clock()
            confirmed = [a for a in rnd.waiting if status.get(a)]
            expired = [a for a in rnd.waiting if a not in confirmed and rnd.deadlines[a] <= now]
            if confirmed or expired:
                state.confirm(confirmed, now)
                state.forget(expired)
                # Saved before send() returns: a crash after this point never resends.
                await self._save_state(state)
            for ack_id in confirmed:
                rnd.delivered.update(rnd.waiting.pop(ack_id))
            for ack_id in expired:
                positions = rnd.waiting.pop(ack_id)
                rnd.fail(
                    positions,
                    RetryableSinkError(
                        f"ackId {ack_id} not confirmed within {self.config.ack_timeout_seconds:g}"
                        " s; its events will be sent again"
                    ),
                )
                log.warning(
                    "splunk_hec_ack_timeout", sink=self.name, ack_id=ack_id, events=len(positions)
                )
            if rnd.waiting:
                next_deadline = min(rnd.deadlines[a] for a in rnd.waiting)
                await asyncio.sleep(max(0.0, min(delay, next_deadline - self.clock())))
                delay = min(delay * 2, self.config.ack_poll_interval_seconds)

    # -- outcome --------------------------------------------------------------------

    def _finish(self, rnd: _Round, batch: Sequence[Event]) -> None:
        if len(rnd.delivered.union(rnd.failed)) < len(batch):
            gap = RetryableSinkError("not settled by HEC; resending")
            for pos in range(len(batch)):
                if not rnd.settled(pos):  # a bookkeeping gap must not pass as delivered
                    rnd.failed[pos] = gap
        if self._refused and rnd.delivered - rnd.failed.keys():
            log.info("splunk_hec_resumed", sink=self.name)
            self._refused = ""
        if not rnd.failed:
            return
        delivered = len(batch) - len(rnd.failed)
        errors = list(rnd.failed.values())
        if delivered == 0 and not any(isinstance(e, PermanentSinkError) for e in errors):
            unavailable = [e for e in errors if isinstance(e, SinkUnavailableError)]
            if unavailable:
                raise unavailable[0]
            raise errors[0]
        raise PartialDeliveryError(rnd.failed)
