"""Cursor -> sink: one loop per sink that reads the log, sends, and moves the cursor.

The dispatcher alone owns retry policy; sinks only classify errors (sinks.base), and
what an outcome means is the pure function in ``receiver.outcome``.

- the loop holds the sink's cursor **lease** (``store.acquire``) before it reads; a
  ``LeaseKeeper`` renews it while the loop works. With several dispatch replicas
  (PostgreSQL) one owns a sink at a time and the others stand by; a lease that is
  lost stops the send in flight and nothing is written (``LeaseLostError``);
- a batch is the routed events after the cursor, in log order, up to
  ``batch_max_events`` / ``batch_max_bytes``, or what arrived once its oldest event
  has waited ``batch_max_wait_seconds``;
- the cursor moves, in one transaction with the outcome (dead letters, done set,
  the head's attempts and next attempt time), only after ``send`` returned;
- a retryable failure keeps the cursor before the first failed event: newer events
  never overtake it (strict per-sink order) until it succeeds or is dead-lettered;
- under a backlog the next batch is read while one is in flight (``receiver.readahead``);
- re-queued dead letters go out beside the log, each with its own attempts;
- ``health()`` runs after start and every minute while idle, so ``/readyz`` shows a
  broken destination (say, a revoked token) before an event has to fail on it;
- ``stop(grace)`` lets a send in flight finish within the grace period, then
  abandons it without writing anything: what was not recorded is sent again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import socket
import time
from collections.abc import Callable, Sequence

import structlog

from receiver.errors import CursorMissingError, DeadLetterBudgetError, LeaseLostError
from receiver.lease import LeaseKeeper
from receiver.metrics import Metrics
from receiver.outcome import Decision, Policy, backoff_delay, decide, progress, settle_requeued
from receiver.pacing import DrainPacer
from receiver.readahead import ReadAhead
from receiver.store import Filling, Lease, LogBatch, Progress, Route, Store
from sinks import Event, RetryableSinkError, Sink, SinkConfig

__all__ = ["Dispatcher", "backoff_delay"]

log = structlog.get_logger(component="bighub_siem.dispatcher")


def owner_token() -> str:
    """Who holds a lease: host, process and a random part (a restarted pid differs)."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{os.urandom(4).hex()}"


class Dispatcher:
    """Drains one sink's cursor from the store into the sink."""

    def __init__(
        self,
        sink: Sink,
        config: SinkConfig,
        store: Store,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        lease_seconds: float = 30.0,
        poll_seconds: float = 1.0,
        health_interval_seconds: float = 60.0,
        health_timeout_seconds: float = 15.0,
        owner: str | None = None,
        pacer: DrainPacer | None = None,
        create_cursor: bool = True,
        read_ahead: bool = True,
    ) -> None:
        self.sink = sink
        self.config = config
        self.name = config.name
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.rng = rng or random.Random()
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.health_interval_seconds = health_interval_seconds
        self.health_timeout_seconds = health_timeout_seconds
        self.owner = owner or owner_token()
        self.pacer = pacer
        self.create_cursor = create_cursor
        self._batch_started = 0.0
        self.route = Route(config.name, tuple(config.events))
        self.policy = Policy(
            config.max_attempts, config.retry_initial_seconds, config.retry_max_seconds
        )
        self.up = False
        self.detail = "starting"
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lease: Lease | None = None
        self._keeper: LeaseKeeper | None = None
        self._sending: asyncio.Task[None] | None = None
        self._outage = 0  # consecutive unavailable outcomes, for the unavailable backoff
        self._last_health = 0.0
        self._arrived = 0  # events stored since the last read
        self._filling = False  # waiting for a partial batch to fill
        self._held: Filling | None = None  # what that batch holds, for the next read
        self._requeue_check_at = 0.0
        self._ahead = ReadAhead()  # the next batch, read while one is being sent
        self.read_ahead = read_ahead

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"dispatch:{self.name}")

    def notify(self) -> None:
        """New events were stored for this sink."""
        self._arrived += 1
        if not self._filling or self._arrived >= self.config.batch_max_events:
            self._wake.set()

    def notify_requeued(self) -> None:
        """Dead letters of this sink were re-queued: look for them at once."""
        self._requeue_check_at = 0.0
        self._wake.set()

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Let the send in flight finish within ``grace_seconds``, else abandon it
        (nothing is written: its events are sent again later); then close the sink.
        The lease is given up only when nothing was abandoned, so a standby cannot
        start sending what an abandoned send may still be delivering."""
        deadline = time.monotonic() + grace_seconds
        self._stop.set()
        self._wake.set()
        abandoned = False
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace_seconds)
            except asyncio.TimeoutError:
                abandoned = self._sending is not None
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        remaining = max(0.5, deadline - time.monotonic())
        try:
            await asyncio.wait_for(self.sink.close(), remaining)
        except Exception as exc:  # a hung client must not hold the shutdown
            log.warning("sink_close_failed", sink=self.name, error=type(exc).__name__)
        await self._drop_lease(release=not abandoned)

    def _set_state(self, up: bool, detail: str) -> None:
        if up != self.up or detail != self.detail:
            (log.info if up else log.error)("sink_state", sink=self.name, up=up, detail=detail)
        self.up, self.detail = up, detail
        self.metrics.snapshot.sink_up[self.name] = up

    async def _sleep(
        self, seconds: float, *, wakeable: bool = True, until_full: bool = False
    ) -> None:
        """Sleep, ending early on stop, and when ``wakeable`` on new events (with
        ``until_full``: only once a whole batch has arrived). The wake flag is
        cleared before each read, never here, so a notify that lands while the
        loop reads is not lost."""
        if seconds <= 0 or self._stop.is_set():
            return
        waiters = [asyncio.ensure_future(self._stop.wait())]
        if wakeable:
            self._filling = until_full
            if until_full and self._arrived < self.config.batch_max_events:
                self._wake.clear()  # count arrivals from here; ones before are in the read
            waiters.append(asyncio.ensure_future(self._wake.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._filling = False
            for w in waiters:
                w.cancel()

    # -- the loop -----------------------------------------------------------------

    async def _run(self) -> None:
        await self._start_sink()
        try:
            while not self._stop.is_set():
                try:
                    if await self._hold_lease():
                        await self._step()
                except LeaseLostError as exc:
                    log.warning("lease_lost", sink=self.name, detail=str(exc)[:200])
                    await self._drop_lease(release=False)
                    # Let a standby take the sink over rather than flap back at once.
                    await self._sleep(self.lease_seconds, wakeable=False)
                except Exception as exc:  # store trouble: log, wait, try again; never die
                    log.error(
                        "dispatch_loop_error",
                        sink=self.name,
                        error=f"{type(exc).__name__}: {exc}"[:300],
                    )
                    await self._sleep(self.poll_seconds, wakeable=False)
        finally:
            await self._drop_keeper()

    async def _start_sink(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                await self.sink.start()
            except Exception as exc:
                failures += 1
                self._set_state(False, f"start failed: {exc}")
                await self._sleep(
                    backoff_delay(failures, 1.0, self.config.retry_max_seconds, self.rng),
                    wakeable=False,
                )
                continue
            self._set_state(True, "")
            await self._check_health()
            return

    async def _check_health(self) -> None:
        """Ask the sink what a send needs; shown in /readyz before any event fails."""
        self._last_health = time.monotonic()
        try:
            health = await asyncio.wait_for(self.sink.health(), self.health_timeout_seconds)
        except Exception as exc:  # a health check must never stop the loop
            self._set_state(False, f"health check failed: {type(exc).__name__}: {exc}"[:300])
            return
        self._set_state(health.ok, "" if health.ok else health.detail[:300])

    async def _hold_lease(self) -> bool:
        """Hold the cursor's lease, taking it when free; False while another has it."""
        if self._lease is not None and self._keeper is not None:
            if self._keeper.valid:
                return True
            raise LeaseLostError("the lease could not be renewed in time")
        asked = time.monotonic()
        try:
            lease = await self.store.acquire(
                self.name, self.owner, lease_seconds=self.lease_seconds, create=self.create_cursor
            )
        except CursorMissingError:
            # Retired while this process still runs it: export nothing, say why.
            self._set_state(
                False,
                "no cursor: the sink was retired (bighub-siem retire-sink); restart with"
                " the current configuration",
            )
            await self._sleep(self.poll_seconds * 10, wakeable=False)
            return False
        if lease is None:
            if time.monotonic() - self._last_health >= self.health_interval_seconds:
                await self._check_health()
            await self._sleep(self.poll_seconds, wakeable=False)
            return False
        log.info("lease_acquired", sink=self.name, fence=lease.fence)
        self._lease = lease
        self._keeper = LeaseKeeper(self.store, lease, self.lease_seconds, asked)
        return True

    async def _drop_keeper(self) -> None:
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            await keeper.close()

    async def _drop_lease(self, *, release: bool) -> None:
        keeper, lease = self._keeper, self._lease
        self._keeper = self._lease = None
        self._ahead.discard()
        if keeper is not None:
            await keeper.close()
        if release and lease is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.store.release_lease(lease), 5.0)

    def _current(self) -> Lease:
        lease, keeper = self._lease, self._keeper
        if lease is None or keeper is None or not keeper.valid:
            raise LeaseLostError("the lease is gone")
        return lease

    async def _step(self) -> None:
        lease = self._current()
        self._wake.clear()  # before reading: a notify from here on wakes the next sleep
        self._arrived = 0
        now = self.clock()
        if now >= self._requeue_check_at and await self._requeued(lease, now):
            return
        if lease.next_attempt_at > now:  # the head is backing off: nothing overtakes it
            await self._sleep(lease.next_attempt_at - now, wakeable=False)
            return
        if self.pacer is not None:
            await self.pacer.turn()  # webhooks arriving: export takes its share only
        self._batch_started = time.monotonic()
        # After a whole batch failed at its last attempt, the head goes alone.
        limit = 1 if lease.attempts >= self.policy.max_attempts else self.config.batch_max_events
        fill_wait = self.config.batch_max_wait_seconds if limit > 1 else 0.0
        batch = await self._ahead.take(lease) if self._ahead.pending else None
        if batch is None or not (batch.events or batch.filling):  # nothing ahead: look now
            batch = await self.store.read(
                lease,
                self.route,
                limit=limit,
                max_bytes=self.config.batch_max_bytes,
                fill_wait=fill_wait,
                now=now,
                filling=self._held,
            )
        self._held = batch.filling
        if batch.ready_at is not None and batch.filling is not None:
            # Not full and not old enough: wake early only once enough new events arrived
            # to fill a batch, not on every single one (that made each request a read).
            # The next read counts on from what is held (the store ignores it once the
            # cursor moved); polling still runs, for events other replicas stored.
            self._arrived += batch.filling.events
            await self._sleep(min(batch.ready_at - now, self.poll_seconds), until_full=True)
            return
        if not batch.events:
            await self._idle(lease, batch)
            return
        await self._deliver(lease, batch)

    async def _idle(self, lease: Lease, batch: LogBatch) -> None:
        if batch.scanned_to > lease.position:  # skipped events the routes do not take
            self._lease = await self.store.advance(lease, Progress(position=batch.scanned_to))
        if batch.more:
            return  # the read stopped before the end of the log: go on at once
        if time.monotonic() - self._last_health >= self.health_interval_seconds:
            await self._check_health()  # idle: the next event should not be first to find out
        await self._sleep(self.poll_seconds)

    async def _send(self, events: Sequence[Event]) -> BaseException | None:
        """``sink.send`` under the lease: lost midway, it is abandoned (LeaseLostError)."""
        keeper = self._keeper
        if keeper is None:
            raise LeaseLostError("no lease")
        task = self._sending = asyncio.ensure_future(self.sink.send(list(events)))
        lost = asyncio.ensure_future(keeper.lost.wait())
        try:
            await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                raise LeaseLostError("lease lost during the send: abandoned")
            if task.cancelled():  # not by us (we are still here): a sink's own doing
                return RetryableSinkError("the send was cancelled")
            return task.exception()
        finally:
            lost.cancel()
            if not task.done():
                task.cancel()  # abandoned (lease lost, or stop): nothing is written for it
            self._sending = None

    async def _deliver(self, lease: Lease, batch: LogBatch) -> None:
        now = self.clock()
        max_age = self.config.max_age_seconds
        expired = [i for i, e in enumerate(batch.events) if now - e.received_at > max_age]
        to_send = [e for i, e in enumerate(batch.events) if i not in expired]
        # Under a backlog, read the next batch while this one is sent; not while webhooks
        # are paced ahead of export: the pacer counts a batch from its read on.
        if self.read_ahead and not (self.pacer is not None and self.pacer.limiting):
            self._ahead.begin(self.store, self.route, self.config, lease, batch, now)
        started = time.monotonic()
        error = await self._send(to_send) if to_send else None
        log.info(
            "delivery_attempt",
            sink=self.name,
            events=len(to_send),
            seconds=round(time.monotonic() - started, 4),
            outcome="ok" if error is None else type(error).__name__,
        )
        decision = decide(
            len(batch.events),
            error,
            expired=expired,
            attempts=lease.attempts,
            outage=self._outage,
            policy=self.policy,
            rng=self.rng,
        )
        await self._record(self._current(), batch, decision)

    async def _record(self, lease: Lease, batch: LogBatch, decision: Decision) -> None:
        try:
            self._lease = await self.store.advance(
                lease, progress(lease, batch, decision, now=self.clock())
            )
        except DeadLetterBudgetError as exc:
            # The dead letters do not fit: hold before the first of them (the sink is
            # reported down) instead of writing them or dropping them.
            hold = self.policy.delay(self._outage + 1, self.rng)
            decision = hold_before_dead(decision, lease, hold, str(exc), self.policy.max_attempts)
            self._lease = await self.store.advance(
                lease, progress(lease, batch, decision, now=self.clock())
            )
        self._account(batch, decision)
        if self.pacer is not None:
            self.pacer.spent(time.monotonic() - self._batch_started)
        if decision.delay > 0:
            await self._sleep(decision.delay, wakeable=False)

    def _account(self, batch: LogBatch, decision: Decision) -> None:
        m = self.metrics
        if decision.delivered:
            m.delivered.labels(self.name).inc(len(decision.delivered))
        if decision.dead:
            m.dead_lettered.labels(self.name).inc(len(decision.dead))
            log.warning(
                "dead_lettered",
                sink=self.name,
                events=len(decision.dead),
                event_ids=[batch.events[i].event_id for i, _, _ in decision.dead[:20]],
                reason=decision.dead[0][1][:300],
            )
        if decision.retry_from is not None:
            waiting = len(batch.events) - decision.retry_from
            m.retried.labels(self.name).inc(waiting)
            log.warning(
                "delivery_retry",
                sink=self.name,
                events=waiting,
                delay=round(decision.delay, 3),
                attempts=decision.attempts,
                error=(decision.error or "")[:300],
            )
        if decision.unavailable is not None:
            self._outage += 1
            self._set_state(False, decision.unavailable[:300])
        elif decision.retry_from is None or decision.delivered:
            self._outage = 0
            self._set_state(True, "")

    async def _requeued(self, lease: Lease, now: float) -> bool:
        """Send due re-queued dead letters; True if there were any."""
        cfg = self.config
        items = await self.store.requeued(
            self.name, now=now, limit=cfg.batch_max_events, max_bytes=cfg.batch_max_bytes
        )
        if not items:
            self._requeue_check_at = now + self.poll_seconds
            return False
        error = await self._send([r.event for r in items])
        settlement, delay = settle_requeued(
            items,
            error,
            now=self.clock(),
            max_age_seconds=cfg.max_age_seconds,
            outage=self._outage,
            policy=self.policy,
            rng=self.rng,
        )
        await self.store.settle_requeued(self._current(), settlement)
        self.metrics.delivered.labels(self.name).inc(len(settlement.delivered))
        if settlement.dead:
            self.metrics.dead_lettered.labels(self.name).inc(len(settlement.dead))
        log.info(
            "requeued_delivery",
            sink=self.name,
            delivered=len(settlement.delivered),
            retry=len(settlement.retry),
            dead=len(settlement.dead),
        )
        if settlement.retry:
            self._requeue_check_at = self.clock() + delay
        return True


def hold_before_dead(
    decision: Decision, lease: Lease, seconds: float, why: str, max_attempts: int
) -> Decision:
    """``decision`` without the dead letters that did not fit.

    When an older event is retried anyway, that retry stands and the would-be dead
    letters after it are simply sent again later. Otherwise the sink holds at the first
    of them, with the head's attempts at ``max_attempts``: the next reads take the head
    alone (see ``_step``), so nothing newer is sent past it and the done set does not grow
    while the hold lasts.
    """
    first = min(i for i, _, _ in decision.dead)
    if decision.retry_from is not None and decision.retry_from < first:
        return dataclasses.replace(decision, dead=())
    return Decision(
        delivered=decision.delivered,
        dead=(),
        retry_from=first,
        attempts=max_attempts,
        delay=seconds,
        error=why,
        unavailable=why,
        charged=False,
    )
