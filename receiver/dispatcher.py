"""Outbox -> sink: one loop per sink that batches, sends, retries and dead-letters.

The dispatcher alone owns retry policy; sinks only classify errors (sinks.base).

- a batch fills up to ``batch_max_events`` / ``batch_max_bytes``, or goes out when
  its oldest event has waited ``batch_max_wait_seconds``;
- an outbox row is marked delivered only after ``send`` returned (the sink confirmed);
- ``RetryableSinkError``: one attempt charged; exponential backoff with jitter,
  capped. The whole loop waits out the backoff before claiming again, so newer
  events never overtake older ones for the same sink (per-key order holds);
- ``SinkUnavailableError``: no attempt charged, the sink is reported down, the loop
  backs off (capped; at least the error's ``retry_after`` when the destination named
  one) and tries the same events again;
- ``PermanentSinkError``, ``max_attempts`` reached, or older than ``max_age_seconds``:
  dead letter (kept, listable, re-queueable);
- ``health()`` runs after start and every minute while idle, so ``/readyz`` shows a
  broken destination (say, a revoked token) before an event has to fail on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Sequence

import structlog

from receiver.metrics import Metrics
from receiver.store import Claimed, RetryUpdate, Store
from sinks import (
    PartialDeliveryError,
    PermanentSinkError,
    RetryableSinkError,
    Sink,
    SinkConfig,
    SinkError,
    SinkUnavailableError,
)

__all__ = ["Dispatcher", "backoff_delay"]

log = structlog.get_logger(component="bighub_siem.dispatcher")


def backoff_delay(attempt: int, initial: float, cap: float, rng: random.Random) -> float:
    """Delay before attempt ``attempt + 1``: exponential, capped, with equal jitter.

    Half of the delay is fixed and half random, so retries spread out but never
    come back sooner than half the nominal delay.
    """
    nominal = min(cap, initial * float(2 ** max(0, min(attempt - 1, 40))))
    return float(nominal / 2 + rng.uniform(0, nominal / 2))


class Dispatcher:
    """Drains one sink's outbox rows from the store into the sink."""

    def __init__(
        self,
        sink: Sink,
        config: SinkConfig,
        store: Store,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        lease_seconds: float = 300.0,
        poll_seconds: float = 1.0,
        health_interval_seconds: float = 60.0,
        health_timeout_seconds: float = 15.0,
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
        self.up = False
        self.detail = "starting"
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._outage = 0  # consecutive unavailable answers, for the loop's own backoff
        self._last_health = 0.0
        self._arrived = 0  # events stored since the last look at the outbox
        self._filling = False  # waiting for a partial batch to fill

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"dispatch:{self.name}")

    def notify(self) -> None:
        """New events were stored for this sink."""
        self._arrived += 1
        if not self._filling or self._arrived >= self.config.batch_max_events:
            self._wake.set()

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Finish the batch in flight (up to ``grace_seconds``), then close the sink."""
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace_seconds)
            except asyncio.TimeoutError:
                # The leased rows are re-sent after restart: at-least-once holds.
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        with contextlib.suppress(Exception):
            await self.sink.close()

    def _set_state(self, up: bool, detail: str) -> None:
        if up != self.up or detail != self.detail:
            (log.info if up else log.error)("sink_state", sink=self.name, up=up, detail=detail)
        self.up, self.detail = up, detail
        self.metrics.snapshot.sink_up[self.name] = up

    async def _sleep(
        self, seconds: float, *, wakeable: bool = True, until_full: bool = False
    ) -> None:
        """Sleep, ending early on stop, and when ``wakeable`` on new events (with
        ``until_full``: only once a whole batch has arrived)."""
        if seconds <= 0 or self._stop.is_set():
            return
        waiters = [asyncio.ensure_future(self._stop.wait())]
        if wakeable:
            self._wake.clear()
            self._filling = until_full
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
        while not self._stop.is_set():
            try:
                await self._step()
            except Exception as exc:  # store trouble: log, wait, try again; never die
                log.error(
                    "dispatch_loop_error", sink=self.name, error=f"{type(exc).__name__}: {exc}"
                )
                await self._sleep(self.poll_seconds, wakeable=False)

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

    async def _step(self) -> None:
        cfg = self.config
        now = self.clock()
        summary = await self.store.pending_summary(self.name, now=now, limit=cfg.batch_max_events)
        if summary.due == 0:
            if time.monotonic() - self._last_health >= self.health_interval_seconds:
                await self._check_health()  # idle: the next event should not be first to find out
            wait = self.poll_seconds
            if summary.next_due_at is not None:
                wait = min(wait, max(0.0, summary.next_due_at - now))
            await self._sleep(wait)
            return
        if (
            cfg.batch_max_wait_seconds > 0
            and summary.due < cfg.batch_max_events
            and summary.oldest_received_at is not None
        ):
            ready_at = summary.oldest_received_at + cfg.batch_max_wait_seconds
            if ready_at > now:
                # Wake early only once enough new events arrived to fill a batch, not on
                # every single one (that turned each request into a store query).
                self._arrived = summary.due
                await self._sleep(min(ready_at - now, self.poll_seconds), until_full=True)
                return
        batch = await self.store.claim(
            self.name,
            limit=cfg.batch_max_events,
            max_bytes=cfg.batch_max_bytes,
            now=now,
            lease_seconds=self.lease_seconds,
        )
        if batch:
            await self._deliver(batch)

    async def _deliver(self, batch: list[Claimed]) -> None:
        now = self.clock()
        expired = [
            c
            for c in batch
            if now - max(c.event.received_at, c.requeued_at or 0.0) > self.config.max_age_seconds
        ]
        if expired:
            await self._dead(expired, "expired: older than max_age_seconds")
            batch = [c for c in batch if c not in expired]
            if not batch:
                return
        started = time.monotonic()
        error: Exception | None = None
        try:
            await self.sink.send([c.event for c in batch])
        except Exception as exc:
            error = exc
        log.info(
            "delivery_attempt",
            sink=self.name,
            events=len(batch),
            seconds=round(time.monotonic() - started, 4),
            outcome="ok" if error is None else type(error).__name__,
        )
        if error is None:
            await self._delivered(batch)
            self._outage = 0
            self._set_state(True, "")
        elif isinstance(error, PartialDeliveryError):
            await self._partial(batch, error)
        elif isinstance(error, SinkUnavailableError):
            await self._unavailable(batch, error)
        elif isinstance(error, RetryableSinkError):
            await self._retry(batch, str(error))
        elif isinstance(error, PermanentSinkError):
            await self._dead(batch, f"permanent: {error}")
        else:  # a sink bug must not lose events: treat it as retryable
            log.error("sink_raised_unexpected", sink=self.name, error=repr(error)[:300])
            await self._retry(batch, f"unexpected {type(error).__name__}: {error}")

    async def _delivered(self, batch: Sequence[Claimed]) -> None:
        await self.store.mark_delivered([c.outbox_id for c in batch])
        self.metrics.delivered.labels(self.name).inc(len(batch))

    async def _dead(self, batch: Sequence[Claimed], reason: str) -> None:
        await self._dead_each([(c, reason) for c in batch])

    async def _dead_each(self, items: Sequence[tuple[Claimed, str]]) -> None:
        await self.store.mark_dead([(c.outbox_id, r) for c, r in items], now=self.clock())
        self.metrics.dead_lettered.labels(self.name).inc(len(items))
        log.warning(
            "dead_lettered",
            sink=self.name,
            events=len(items),
            event_ids=[c.event.event_id for c, _ in items[:20]],
            reason=items[0][1][:300],
        )

    async def _retry(self, batch: Sequence[Claimed], error: str, *, wait: bool = True) -> None:
        cfg = self.config
        out = [c for c in batch if c.attempts + 1 >= cfg.max_attempts]
        if out:
            await self._dead(out, f"max attempts reached; last error: {error}")
        keep = [c for c in batch if c not in out]
        if not keep:
            return
        attempts = max(c.attempts for c in keep) + 1
        delay = backoff_delay(attempts, cfg.retry_initial_seconds, cfg.retry_max_seconds, self.rng)
        at = self.clock() + delay
        await self.store.mark_retry([RetryUpdate(c.outbox_id, at, error) for c in keep])
        self.metrics.retried.labels(self.name).inc(len(keep))
        log.warning(
            "delivery_retry",
            sink=self.name,
            events=len(keep),
            delay=round(delay, 3),
            error=error[:300],
        )
        # Wait the backoff out here too, so newer events do not overtake these.
        if wait:
            await self._sleep(delay, wakeable=False)

    async def _unavailable(self, batch: Sequence[Claimed], exc: SinkUnavailableError) -> None:
        self._outage += 1
        self._set_state(False, str(exc)[:300])
        cap = self.config.retry_max_seconds
        delay = backoff_delay(self._outage, self.config.retry_initial_seconds, cap, self.rng)
        if exc.retry_after is not None:  # the destination said how long (HTTP Retry-After)
            delay = max(delay, min(exc.retry_after, cap))
        at = self.clock() + delay
        await self.store.mark_retry(
            [RetryUpdate(c.outbox_id, at, f"unavailable: {exc}", charge=False) for c in batch]
        )
        await self._sleep(delay, wakeable=False)

    async def _partial(self, batch: Sequence[Claimed], exc: PartialDeliveryError) -> None:
        failed: dict[int, SinkError] = {
            i: e for i, e in exc.failures.items() if 0 <= i < len(batch)
        }
        ok = [c for i, c in enumerate(batch) if i not in failed]
        await self._delivered(ok)
        permanent = {i: e for i, e in failed.items() if isinstance(e, PermanentSinkError)}
        down = {i: e for i, e in failed.items() if isinstance(e, SinkUnavailableError)}
        retry = {i: e for i, e in failed.items() if i not in permanent and i not in down}
        if permanent:
            await self._dead_each([(batch[i], f"permanent: {e}") for i, e in permanent.items()])
        if retry:
            # When some events also found the sink unavailable, that backoff is waited below.
            first = next(iter(retry.values()))
            await self._retry([batch[i] for i in retry], str(first), wait=not down)
        if down:
            await self._unavailable([batch[i] for i in down], next(iter(down.values())))
