"""The running service: settings, store, router, dispatchers, metrics, upkeep.

Built once per process and handed to the HTTP apps; there is no module-level state.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import structlog

from receiver.dispatcher import Dispatcher
from receiver.errors import ConfigError
from receiver.metrics import Metrics
from receiver.pacing import DrainPacer
from receiver.routing import Router
from receiver.settings import Settings
from receiver.store import Route, Store, create_store
from sinks import build_sink

if TYPE_CHECKING:
    from receiver.reconcile import Reconciler

__all__ = ["ROLES", "Role", "Service"]

Role = Literal["all", "ingress", "dispatch"]
ROLES: tuple[Role, ...] = ("all", "ingress", "dispatch")

log = structlog.get_logger(component="bighub_siem.service")


class Service:
    """Everything ``serve`` runs besides the HTTP listeners."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
        dispatch: bool = True,
        role: Role = "all",
    ) -> None:
        """Build the service; the store is created here and opened by ``start``.

        Args:
            role: ``all``; ``ingress`` runs no dispatchers; ``dispatch`` is for a
                process that serves no webhooks (the CLI leaves that listener out).

        Raises:
            ConfigError: a split role on a store that one process owns (SQLite).
            StoreError: the store's driver is missing.
        """
        self.settings = settings
        self.clock = clock
        self.metrics = Metrics()
        self.metrics.snapshot.spool_max_bytes = settings.store.max_spool_bytes
        self.metrics.snapshot.spool_max_events = settings.store.max_spool_events
        self.metrics.snapshot.dead_max_bytes = settings.store.max_dead_letter_bytes
        self.router = Router(settings.sinks)
        self.store = store if store is not None else create_store(settings.store, exclusive=True)
        self.secrets = tuple(s.get_secret_value().encode("utf-8") for s in settings.ingress.secrets)
        self.role = role
        self.dispatch = dispatch and role != "ingress"
        if role != "all" and not self.store.shared:
            raise ConfigError(
                [
                    f"--role {role}: the {self.store_kind} store belongs to one process,"
                    " which must run everything (--role all); split roles need PostgreSQL"
                ]
            )
        self.dispatchers: dict[str, Dispatcher] = {}
        self.pacer = DrainPacer(settings.serve.export_share_while_ingesting)
        self._upkeep: asyncio.Task[None] | None = None
        self._init_reconciler()
        # Request ids: a per-start random prefix plus a counter; uuid4 per request costs a
        # getrandom() syscall on the hot path for no benefit.
        self._request_prefix = os.urandom(4).hex()
        self._request_counter = itertools.count(1)
        self._writable_check: asyncio.Future[bool] | None = None
        self._writable_at = 0.0

    async def store_writable(self) -> bool:
        """The store's writability, checked at most once a second.

        /readyz is unauthenticated on the public listener: concurrent and repeated
        probes share one check instead of each queueing work on the store.
        """
        now = time.monotonic()
        if self._writable_check is None or now - self._writable_at >= 1.0:
            self._writable_at = now
            self._writable_check = asyncio.ensure_future(self.store.writable())
        return await asyncio.shield(self._writable_check)

    def next_request_id(self) -> str:
        return f"{self._request_prefix}-{next(self._request_counter):x}"

    async def start(self) -> None:
        await self.store.open()
        # Every role, before any webhook is taken: a new sink's cursor starts at the end
        # of the log as it is now, so it gets every event acknowledged from here on.
        await self.store.ensure_cursors(
            [Route(s.name, tuple(s.events)) for s in self.settings.sinks]
        )
        await self._orphaned_sinks()
        if self.dispatch:
            for cfg in self.settings.sinks:
                d = Dispatcher(
                    build_sink(cfg),
                    cfg,
                    self.store,
                    self.metrics,
                    clock=self.clock,
                    lease_seconds=self.settings.store.lease_seconds,
                    pacer=self.pacer,
                    create_cursor=False,  # made by ensure_cursors above; missing = retired
                )
                self.dispatchers[cfg.name] = d
                d.start()
        self._upkeep = asyncio.create_task(self._upkeep_loop(), name="upkeep")
        self._start_reconciler()
        log.info(
            "service_started", sinks=list(self.dispatchers), store=self.store_kind, role=self.role
        )

    async def _orphaned_sinks(self) -> None:
        """A cursor of a sink no longer configured would hold its events forever.

        A store this process owns retires it: the events its routes still had to
        deliver become dead letters (visible, re-queueable once the sink is configured
        again, purgeable) and the cursor goes. A shared store only warns: in a rolling
        deploy another replica may still run a config that has the sink
        (``bighub-siem retire-sink NAME`` retires it by hand).
        """
        configured = {s.name for s in self.settings.sinks}
        for sink in await self.store.cursor_sinks():
            if sink in configured:
                continue
            if self.store.shared or not self.dispatch:
                log.warning(
                    "unconfigured_sink_has_a_cursor",
                    sink=sink,
                    hint="once no replica has it configured: bighub-siem retire-sink NAME",
                )
                continue
            moved = await self.store.retire_sink(
                sink, f"sink {sink!r} is not configured", now=self.clock()
            )
            log.warning("unconfigured_sink_retired", sink=sink, dead_lettered=moved)

    @property
    def store_kind(self) -> str:
        return self.settings.store.url.split(":", 1)[0]

    async def stop(self, grace_seconds: float | None = None) -> None:
        """Stop within ``grace_seconds`` (default ``serve.shutdown_grace_seconds``):
        sends still running then are abandoned, never recorded half-done."""
        grace = (
            self.settings.serve.shutdown_grace_seconds if grace_seconds is None else grace_seconds
        )
        await self._stop_reconciler()
        if self._upkeep is not None:
            self._upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._upkeep
        # Sinks get most of the grace; the store's close needs a moment after them.
        await asyncio.gather(*(d.stop(grace * 0.8) for d in self.dispatchers.values()))
        await self.store.close()
        log.info("service_stopped")

    def notify(self, sinks: tuple[str, ...]) -> None:
        self.pacer.ingested()
        for name in sinks:
            d = self.dispatchers.get(name)
            if d is not None:
                d.notify()

    def notify_requeued(self, sink: str | None) -> None:
        for name, d in self.dispatchers.items():
            if sink in (None, name):
                d.notify_requeued()

    async def refresh_metrics(self) -> None:
        stats = await self.store.stats()
        now = self.clock()
        snap = self.metrics.snapshot
        names = {s.name for s in self.settings.sinks} | set(stats.sinks)
        snap.pending = {n: stats.sinks[n].pending if n in stats.sinks else 0 for n in names}
        snap.dead = {n: stats.sinks[n].dead if n in stats.sinks else 0 for n in names}
        snap.oldest_age = {}
        for n in names:
            oldest = stats.sinks[n].oldest_pending_received_at if n in stats.sinks else None
            snap.oldest_age[n] = max(0.0, now - oldest) if oldest is not None else 0.0
        snap.attempts = {n: stats.sinks[n].attempts if n in stats.sinks else 0 for n in names}
        snap.spool_bytes, snap.spool_events = stats.spool_bytes, stats.spool_events
        snap.dead_bytes, snap.dead_events = stats.dead_bytes, stats.dead_events

    async def _upkeep_loop(self, release_every: float = 1.0) -> None:
        """Release bodies below the slowest cursor every second; prune on its interval."""
        prune_every = self.settings.store.prune_interval_seconds
        next_prune = 0.0
        while True:
            try:
                await self.store.release()
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + prune_every
                    pruned = await self.store.prune(now=self.clock())
                    self.metrics.last_prune.set(self.clock())
                    if pruned:
                        log.info("dedup_pruned", events=pruned)
            except Exception as exc:
                log.error("upkeep_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            await asyncio.sleep(release_every)

    # -- upstream replay (receiver/reconcile.py) ------------------------------------------

    def _init_reconciler(self) -> None:
        self.reconciler: Reconciler | None = None
        self.listening = asyncio.Event()
        self._reconcile: asyncio.Task[None] | None = None
        if self.settings.upstream is not None:
            # Imported here: the bighub client is only loaded when [upstream] is set.
            from receiver.reconcile import Reconciler

            self.reconciler = Reconciler(
                self.settings.upstream,
                self.store,
                source=self.settings.ingress.source,
                metrics=self.metrics,
                clock=self.clock,
            )

    def mark_listening(self) -> None:
        """Ingress accepts connections: replays asked for now can be received.

        ``serve`` calls this; the periodic reconcile run waits for it.
        """
        self.listening.set()

    def _start_reconciler(self) -> None:
        upstream = self.settings.upstream
        if self.reconciler is not None and upstream is not None and upstream.interval_seconds > 0:
            self._reconcile = asyncio.create_task(
                self._reconcile_loop(self.reconciler, upstream.interval_seconds), name="reconcile"
            )

    async def _stop_reconciler(self) -> None:
        # Before the store closes. A client call still in its (daemon) thread is abandoned.
        if self._reconcile is not None:
            self._reconcile.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconcile

    async def _reconcile_loop(self, reconciler: Reconciler, interval: float) -> None:
        # The first run is at start-up, once ingress listens: asking BIGHUB to
        # replay before that would only produce new failed deliveries.
        await self.listening.wait()
        while True:
            try:
                await reconciler.run()
            except Exception:  # run() reports its own failures; this guards the loop
                log.exception("reconcile_loop_error")
            await asyncio.sleep(interval)
