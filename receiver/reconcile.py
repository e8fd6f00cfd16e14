"""Upstream replay: ask BIGHUB to re-send the deliveries this receiver missed.

When the receiver was down, unreachable or answered 503, BIGHUB marks those
deliveries failed. One run, for each configured webhook:

1. reads the recent deliveries through the official ``bighub`` client
   (``webhooks.deliveries(webhook_id, limit=lookback_limit)``), tolerantly;
2. keeps the failed ones whose event the store does not hold: by event id when the
   delivery names one; otherwise by delivery id (the receiver records the
   ``X-BIGHUB-Delivery-Id`` header of every event it stores);
3. drops those asked for within the cool-down (the replay ledger in the store) and
   repeats of one event within the run;
4. asks ``webhooks.replay_failed_delivery`` for the rest, in the answer's order, at
   most ``max_replays_per_run`` per run and ``replay_rate_per_second``, and records
   each ask in the ledger.

Asking too much is cheap and asking too little loses events: a replayed event the
receiver already holds is answered 200 "duplicate" and exported nowhere, so every
doubtful case (no event id, an id we cannot check) leans towards asking.

A dry run reads deliveries and the store only: no replay is asked, nothing is
written, no metric moves.

The client is synchronous (httpx); every call runs in a thread of its own so the
event loop keeps serving webhooks, including the replays the call itself triggers.
Those threads are daemons: a call hanging until its timeout never holds up the
receiver's shutdown (an interrupted ask is simply not in the ledger and is asked
again next run). Its errors are translated in one place, ``upstream_error``::

    ReceiverError
    └── UpstreamError   kind: auth | rate_limited | server | rejected | network |
                        timeout | client; every kind but ``rejected`` (a 4xx for
                        this one delivery) is ``transient``: retried next run
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog
from bighub import (
    BighubAPIError,
    BighubAuthError,
    BighubClient,
    BighubError,
    BighubNetworkError,
    BighubRateLimitError,
    BighubTimeoutError,
    BighubValidationError,
)

from receiver.deliveries import ID_PATTERN, Delivery, parse_deliveries
from receiver.errors import ReceiverError
from receiver.metrics import Metrics
from receiver.settings import UpstreamSettings
from receiver.store import ReplayRecord, Store

__all__ = [
    "Reconciler",
    "RunReport",
    "UpstreamError",
    "WebhookReport",
    "render_table",
    "upstream_error",
]

log = structlog.get_logger("bighub_siem.reconcile")

# Ledger outcomes that count for the cool-down; "failed: ..." asks are retried next run.
_ASKED = ("requested", "rejected")


# -- errors ---------------------------------------------------------------------------


class UpstreamError(ReceiverError):
    """A BIGHUB API call failed. ``str()`` is safe to log: it never holds a credential."""

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        self.detail = detail[:200]
        super().__init__(f"{kind}: {self.detail}")

    @property
    def transient(self) -> bool:
        return self.kind != "rejected"


def upstream_error(exc: BaseException) -> UpstreamError:
    """The one place where the client's exceptions become ours."""
    if isinstance(exc, BighubAuthError):
        return UpstreamError("auth", f"API key refused ({exc})")
    if isinstance(exc, BighubRateLimitError):  # before BighubAPIError: it is a subclass
        return UpstreamError("rate_limited", str(exc))
    if isinstance(exc, BighubValidationError):
        return UpstreamError("rejected", str(exc))
    if isinstance(exc, BighubAPIError):
        transient = exc.status_code >= 500 or exc.status_code in (408, 425)
        return UpstreamError("server" if transient else "rejected", str(exc))
    if isinstance(exc, BighubTimeoutError):
        return UpstreamError("timeout", str(exc))
    if isinstance(exc, BighubNetworkError):
        return UpstreamError("network", str(exc))
    if isinstance(exc, BighubError):
        return UpstreamError("client", str(exc))
    # The client's own bugs or refusals (e.g. ValueError for an insecure base_url).
    return UpstreamError("client", f"{type(exc).__name__}: {exc}")


# -- reports --------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    """One failed delivery and what the run did about it.

    ``action``: held | cooldown | same_event | would_replay | replayed | rejected |
    replay_failed | over_limit | deferred.
    """

    delivery_id: str
    event_id: str | None
    status: str
    action: str
    detail: str = ""


@dataclass(slots=True)
class WebhookReport:
    webhook_id: str
    deliveries: int = 0
    failed: int = 0
    unreadable: int = 0
    already_held: int = 0
    cooling_down: int = 0
    to_replay: int = 0
    over_limit: int = 0
    replay_requested: int = 0
    replay_succeeded: int = 0
    replay_failed: int = 0
    errors: list[str] = field(default_factory=list)
    error_kinds: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)

    def error(self, kind: str, message: str) -> None:
        self.errors.append(message)
        self.error_kinds.append(kind)


@dataclass(slots=True)
class RunReport:
    """What one run found and did; ``to_dict()`` is the admin endpoint's answer."""

    dry_run: bool
    started_at: float
    finished_at: float = 0.0
    webhooks: list[WebhookReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(w.errors for w in self.webhooks)

    def totals(self) -> dict[str, int]:
        skip = {"webhook_id", "rows", "error_kinds"}
        names = [n for n in WebhookReport.__dataclass_fields__ if n not in skip]
        out = {n: 0 for n in names}
        for w in self.webhooks:
            for n in names:
                value = getattr(w, n)
                out[n] += len(value) if isinstance(value, list) else value
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "ok": self.ok,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "totals": self.totals(),
            "webhooks": [asdict(w) for w in self.webhooks],
        }


def _cell(text: str | None, width: int = 48) -> str:
    text = "-" if text is None else text
    return text if len(text) <= width else text[: width - 1] + "~"


def render_table(report: RunReport) -> str:
    """The CLI's table: one line per failed delivery, then one summary per webhook."""
    header = ("WEBHOOK", "DELIVERY", "EVENT", "STATUS", "ACTION")
    lines = [
        (w.webhook_id, r.delivery_id, _cell(r.event_id), _cell(r.status, 24), r.action)
        for w in report.webhooks
        for r in w.rows
    ]
    out: list[str] = []
    if lines:
        widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
        for row in [header, *lines]:
            out.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
    else:
        out.append("no failed deliveries")
    out.append("")
    for w in report.webhooks:
        out.append(
            f"{w.webhook_id}: {w.deliveries} deliveries, {w.failed} failed, "
            f"{w.already_held} already held, {w.cooling_down} in cool-down, "
            f"{w.to_replay} to replay ({w.over_limit} over the per-run limit), "
            f"replays requested {w.replay_requested} / succeeded {w.replay_succeeded} "
            f"/ failed {w.replay_failed}, {w.unreadable} unreadable"
        )
        out.extend(f"  error: {e}" for e in w.errors)
    if report.dry_run:
        out.append("dry run: no replay was asked and nothing was recorded")
    return "\n".join(out)


# -- the reconciler ---------------------------------------------------------------------


async def _off_loop(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a daemon thread; unlike ``asyncio.to_thread``, a
    call still blocked at exit does not delay the process (the default executor is
    joined by ``asyncio.run``). Only network I/O runs there, never a store write."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: Exception | None) -> None:
        if done.cancelled():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)

    def work() -> None:
        try:
            result, error = fn(*args, **kwargs), None
        except Exception as exc:
            result, error = None, exc
        # RuntimeError: the loop is closed, nobody waits for this answer any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="bighub-client", daemon=True).start()
    return await done


class Reconciler:
    """Runs reconcile passes against the BIGHUB API; one at a time.

    Args:
        settings: the ``[upstream]`` section.
        store: where held events and the replay ledger live (already open).
        source: the ingress source name events are held under.
        metrics: counters to move, or ``None`` (the CLI).
        clock: wall clock for the ledger and the cool-down.
        monotonic: clock for the rate limit.
        sleep: how to wait for the rate limit.
    """

    def __init__(
        self,
        settings: UpstreamSettings,
        store: Store,
        *,
        source: str,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.store = store
        self.source = source
        self.metrics = metrics
        self.clock = clock
        self.monotonic = monotonic
        self.sleep = sleep
        self._lock = asyncio.Lock()
        self._next_ask = 0.0
        self._budget = 0  # replays left in the current run (runs never overlap)

    @property
    def running(self) -> bool:
        return self._lock.locked()

    async def run(
        self, *, dry_run: bool = False, webhook_ids: Sequence[str] | None = None
    ) -> RunReport:
        """One pass over ``webhook_ids`` (default: the configured ones).

        Every API, store or parsing failure ends in the report (and the log), never
        in an exception: the caller is the receiver's event loop.

        Raises:
            ValueError: a webhook id that cannot be an id (checked before any call).
        """
        ids = list(webhook_ids) if webhook_ids else list(self.settings.webhook_ids)
        for wid in ids:
            if not ID_PATTERN.fullmatch(wid):
                raise ValueError("webhook ids are letters, digits and _ . : - (1-128)")
        async with self._lock:
            report = RunReport(dry_run=dry_run, started_at=self.clock())
            await self._run(report, ids)
            report.finished_at = self.clock()
        self._account(report)
        return report

    async def _run(self, report: RunReport, ids: list[str]) -> None:
        try:
            client = await self._call(self._client)
        except UpstreamError as exc:
            for wid in ids:
                report.webhooks.append(WebhookReport(wid))
                report.webhooks[-1].error(exc.kind, f"create client: {exc}")
            return
        self._budget = self.settings.max_replays_per_run
        try:
            for wid in ids:
                rep = WebhookReport(wid)
                report.webhooks.append(rep)
                try:
                    await self._webhook(client, rep, report.dry_run)
                except UpstreamError as exc:
                    log.warning("deliveries_failed", webhook_id=wid, error=str(exc))
                    rep.error(exc.kind, f"list deliveries: {exc}")
                except Exception as exc:  # a store error or a bug: report, keep the receiver up
                    log.exception("reconcile_webhook_failed", webhook_id=wid)
                    rep.error("internal", f"internal: {type(exc).__name__}: {str(exc)[:200]}")
        finally:
            await _off_loop(client.close)

    def _client(self) -> BighubClient:
        s = self.settings
        return BighubClient(
            base_url=s.base_url,
            api_key=s.api_key.get_secret_value() if s.api_key else None,
            bearer_token=s.bearer_token.get_secret_value() if s.bearer_token else None,
            timeout=s.timeout_seconds,
            max_retries=s.max_retries,
            user_agent="bighub-siem-reconciler",
        )

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await _off_loop(fn, *args, **kwargs)
        except Exception as exc:
            raise upstream_error(exc) from exc

    async def _webhook(self, client: BighubClient, rep: WebhookReport, dry_run: bool) -> None:
        answer = await self._call(
            client.webhooks.deliveries, rep.webhook_id, limit=self.settings.lookback_limit
        )
        parsed = parse_deliveries(answer)
        if parsed.problem is not None:
            log.warning("deliveries_unreadable", webhook_id=rep.webhook_id, problem=parsed.problem)
            rep.error("unreadable", f"deliveries answer unreadable: {parsed.problem}")
            return
        if parsed.skipped:
            # An entry we cannot read may be a failed delivery we cannot replay: say so.
            log.warning("delivery_entries_skipped", webhook_id=rep.webhook_id, count=parsed.skipped)
            rep.unreadable = parsed.skipped
            rep.error("unreadable", f"{parsed.skipped} delivery entries could not be read")
        candidates = await self._candidates(rep, parsed.deliveries)
        await self._ask(client, rep, candidates, dry_run)

    async def _candidates(self, rep: WebhookReport, deliveries: Iterable[Delivery]) -> list[Row]:
        since = self.clock() - self.settings.cooldown_seconds
        ledger = await self.store.replays_since(rep.webhook_id, since)
        asked = {d for d, r in ledger.items() if r.outcome.startswith(_ASKED)}
        seen: set[str] = set()
        events: set[str] = set()
        out: list[Row] = []
        for d in deliveries:
            if d.delivery_id in seen:
                continue  # listed twice (pagination overlap): count once
            seen.add(d.delivery_id)
            rep.deliveries += 1
            if not d.failed:
                continue
            rep.failed += 1
            row = Row(d.delivery_id, d.event_id, d.status, "")
            rep.rows.append(row)
            if await self._held(d):
                row.action = "held"
                rep.already_held += 1
            elif d.delivery_id in asked:
                row.action = "cooldown"
                rep.cooling_down += 1
            elif d.event_id is not None and d.event_id in events:
                row.action = "same_event"  # another failed delivery of it is asked this run
            else:
                if d.event_id is not None:
                    events.add(d.event_id)
                out.append(row)
        rep.to_replay = len(out)
        return out

    async def _held(self, d: Delivery) -> bool:
        if d.event_id is not None:
            return await self.store.has_event(self.source, d.event_id)
        # No event id: the delivery id header ingress recorded is the only link. If
        # BIGHUB re-sends under a new delivery id, this misses and we ask again after
        # the cool-down; the receiver answers that repeat "duplicate".
        return await self.store.has_delivery(self.source, d.delivery_id)

    async def _ask(
        self,
        client: BighubClient,
        rep: WebhookReport,
        rows: list[Row],
        dry_run: bool,
    ) -> None:
        stop: str | None = None
        for row in rows:
            if stop is not None:
                row.action, row.detail = "deferred", stop
                continue
            if self._budget <= 0:
                row.action = "over_limit"
                rep.over_limit += 1
                continue
            self._budget -= 1
            if dry_run:
                row.action = "would_replay"
                continue
            error = await self._replay(client, rep.webhook_id, row)
            rep.replay_requested += 1
            if error is None:
                rep.replay_succeeded += 1
                continue
            rep.replay_failed += 1
            rep.error(error.kind, f"replay {row.delivery_id}: {error}")
            if error.transient:
                # Auth, rate limit, 5xx, network: the rest would fail alike; next run.
                stop = f"after {error.kind}"
        if stop is not None:
            log.warning("replays_deferred", webhook_id=rep.webhook_id, reason=stop)

    async def _replay(
        self, client: BighubClient, webhook_id: str, row: Row
    ) -> UpstreamError | None:
        await self._pace()
        # The SDK annotates delivery ids as int but only formats them into the path;
        # BIGHUB ids may be strings, so the checked text goes through unchanged.
        delivery: Any = row.delivery_id
        requested_at = self.clock()
        try:
            await self._call(client.webhooks.replay_failed_delivery, webhook_id, delivery)
        except UpstreamError as exc:
            kind = "failed" if exc.transient else "rejected"
            row.action, row.detail = ("replay_failed" if exc.transient else "rejected"), str(exc)
            outcome = f"{kind}: {exc}"
            log.warning(
                "replay_failed", webhook_id=webhook_id, delivery_id=row.delivery_id, error=str(exc)
            )
            error: UpstreamError | None = exc
        else:
            row.action, outcome, error = "replayed", "requested", None
            log.info("replay_requested", webhook_id=webhook_id, delivery_id=row.delivery_id)
        await self.store.record_replay(
            ReplayRecord(webhook_id, row.delivery_id, row.event_id, requested_at, outcome)
        )
        return error

    async def _pace(self) -> None:
        now = self.monotonic()
        if self._next_ask > now:
            await self.sleep(self._next_ask - now)
        self._next_ask = max(now, self._next_ask) + 1.0 / self.settings.replay_rate_per_second

    def _account(self, report: RunReport) -> None:
        log.info(
            "reconcile_run",
            dry_run=report.dry_run,
            seconds=round(report.finished_at - report.started_at, 3),
            **report.totals(),
        )
        m = self.metrics
        if m is None or report.dry_run:
            return
        for w in report.webhooks:
            m.upstream_deliveries.labels(w.webhook_id).inc(w.deliveries)
            m.upstream_failed.labels(w.webhook_id).inc(w.failed)
            m.replays.labels(w.webhook_id, "requested").inc(w.replay_requested)
            m.replays.labels(w.webhook_id, "succeeded").inc(w.replay_succeeded)
            m.replays.labels(w.webhook_id, "failed").inc(w.replay_failed)
            for kind in w.error_kinds:
                m.upstream_errors.labels(kind).inc()
        m.upstream_last_run.set(report.finished_at)
