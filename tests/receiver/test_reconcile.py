"""The reconciler against the fake BIGHUB control plane, through the real bighub client.

The store is a real SQLite spool in a temp dir; events are put in it directly, and
the webhook URL points at a closed port so every delivery BIGHUB makes fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from receiver.metrics import Metrics
from receiver.reconcile import Reconciler, RunReport
from receiver.settings import UpstreamSettings
from receiver.store import SQLiteStore
from tests.fakes.bighub_api import API_KEY, FakeBighub, bighub_api
from tests.harness import event_body, free_port, stored_event


def _settings(api: FakeBighub, webhook_ids: list[str], **overrides: Any) -> UpstreamSettings:
    values: dict[str, Any] = {
        "base_url": api.base_url,
        "api_key": API_KEY,
        "webhook_ids": webhook_ids,
        "interval_seconds": 0,
        "max_retries": 0,  # the client's own retries are exercised in one test only
        "replay_rate_per_second": 1000,
        **overrides,
    }
    return UpstreamSettings(**values)


async def _hold(store: SQLiteStore, event_id: str, delivery_id: str | None = None) -> None:
    await store.ingest(stored_event(event_id, delivery_id=delivery_id, sinks=()))


def _outage(api: FakeBighub, count: int) -> tuple[str, list[str]]:
    """A webhook whose receiver is down: ``count`` failed deliveries; their ids."""
    wid = api.add_webhook(f"http://127.0.0.1:{free_port()}/webhooks/bighub")
    ids = [str(api.send(wid, event_body(f"evt_{i}")).id) for i in range(count)]
    assert len(api.failed(wid)) == count
    return wid, ids


def _with_store(tmp: Path, body: Callable[[SQLiteStore], Awaitable[None]]) -> None:
    async def main() -> None:
        store = SQLiteStore(tmp / "spool.db")
        await store.open()
        try:
            await body(store)
        finally:
            await store.close()

    asyncio.run(main())


def _asked(api: FakeBighub, wid: str) -> list[str]:
    return [d for w, d in api.replay_requests if w == wid]


def test_replays_only_deliveries_whose_events_are_missing(
    bighub_api: FakeBighub, tmp_path: Path
) -> None:
    """Failed deliveries of held events are not asked for; the others are, once each."""
    wid, ids = _outage(bighub_api, 5)
    bighub_api.record(wid, event_body("evt_ok"), status="delivered")

    async def body(store: SQLiteStore) -> None:
        await _hold(store, "evt_1")
        await _hold(store, "evt_3")
        report = await Reconciler(_settings(bighub_api, [wid]), store, source="bighub").run()
        (w,) = report.webhooks
        assert report.ok, w.errors
        assert (w.deliveries, w.failed, w.already_held, w.to_replay) == (6, 5, 2, 3)
        assert (w.replay_requested, w.replay_succeeded, w.replay_failed) == (3, 3, 0)
        assert sorted(_asked(bighub_api, wid)) == sorted([ids[0], ids[2], ids[4]])
        ledger = await store.replays_since(wid, 0)
        assert sorted(ledger) == sorted([ids[0], ids[2], ids[4]])
        assert {r.outcome for r in ledger.values()} == {"requested"}
        assert {r.event_id for r in ledger.values()} == {"evt_0", "evt_2", "evt_4"}

    _with_store(tmp_path, body)


@pytest.mark.parametrize("event_info", ["payload", "payload_text"])
def test_event_id_read_from_the_payload(
    bighub_api: FakeBighub, tmp_path: Path, event_info: Any
) -> None:
    """When BIGHUB lists the payload instead of an event id, held events are still found."""
    bighub_api.event_info = event_info
    bighub_api.answer_shape = "items"
    wid, ids = _outage(bighub_api, 3)

    async def body(store: SQLiteStore) -> None:
        await _hold(store, "evt_0")
        report = await Reconciler(_settings(bighub_api, [wid]), store, source="bighub").run()
        assert report.webhooks[0].already_held == 1
        assert sorted(_asked(bighub_api, wid)) == sorted(ids[1:])

    _with_store(tmp_path, body)


def test_without_event_id_the_delivery_id_decides(bighub_api: FakeBighub, tmp_path: Path) -> None:
    """A delivery naming no event is skipped only when an event arrived under its id."""
    bighub_api.event_info = "none"
    bighub_api.answer_shape = "list"
    wid, ids = _outage(bighub_api, 3)

    async def body(store: SQLiteStore) -> None:
        await _hold(store, "whatever", delivery_id=ids[1])
        await _hold(store, "other-source-event", delivery_id="999999")
        report = await Reconciler(_settings(bighub_api, [wid]), store, source="bighub").run()
        assert report.webhooks[0].already_held == 1
        assert sorted(_asked(bighub_api, wid)) == sorted([ids[0], ids[2]])

    _with_store(tmp_path, body)


def test_dry_run_changes_nothing(bighub_api: FakeBighub, tmp_path: Path) -> None:
    """A dry run lists what it would ask, asks nothing, records nothing, moves no metric."""
    wid, _ids = _outage(bighub_api, 4)
    metrics = Metrics()

    async def body(store: SQLiteStore) -> None:
        await _hold(store, "evt_0")
        rec = Reconciler(_settings(bighub_api, [wid]), store, source="bighub", metrics=metrics)
        report = await rec.run(dry_run=True)
        w = report.webhooks[0]
        assert report.dry_run
        assert report.ok
        assert [r.action for r in w.rows] == ["would_replay"] * 3 + ["held"]  # newest first
        assert (w.to_replay, w.replay_requested) == (3, 0)
        assert bighub_api.replay_requests == []
        assert await store.replays_since(wid, 0) == {}
        assert len(bighub_api.failed(wid)) == 4

    _with_store(tmp_path, body)
    text = generate_latest(metrics.registry).decode()
    assert "bighub_siem_upstream_last_run_timestamp 0.0" in text
    assert "bighub_siem_upstream_replays_total{" not in text


def test_cooldown_prevents_asking_twice(bighub_api: FakeBighub, tmp_path: Path) -> None:
    """A delivery asked for is not asked again within the cool-down, and is after it."""
    wid, _ids = _outage(bighub_api, 2)
    now = [1_000_000.0]

    async def body(store: SQLiteStore) -> None:
        rec = Reconciler(
            _settings(bighub_api, [wid], cooldown_seconds=600),
            store,
            source="bighub",
            clock=lambda: now[0],
        )
        first = await rec.run()
        assert first.webhooks[0].replay_requested == 2
        # The receiver is still down, so BIGHUB still lists them as failed.
        now[0] += 599
        second = await rec.run()
        assert (second.webhooks[0].cooling_down, second.webhooks[0].replay_requested) == (2, 0)
        assert {r.action for r in second.webhooks[0].rows} == {"cooldown"}
        now[0] += 2
        third = await rec.run()
        assert third.webhooks[0].replay_requested == 2
        assert len(_asked(bighub_api, wid)) == 4

    _with_store(tmp_path, body)


def _listing_error_cases() -> list[Any]:
    return [
        pytest.param({"api_key": "bh_wrong_key_0000000000"}, None, "auth", id="401"),
        pytest.param({}, ("deliveries", 429), "rate_limited", id="429"),
        pytest.param({}, ("deliveries", 500), "server", id="500"),
        pytest.param({}, ("deliveries", 503), "server", id="503"),
        pytest.param({"base_url": "closed"}, None, "network", id="network-down"),
        pytest.param({"timeout_seconds": 0.3}, ("deliveries", 0), "timeout", id="timeout"),  # hangs
        pytest.param({"base_url": "http://10.0.0.1:9"}, None, "client", id="insecure-url"),
    ]


@pytest.mark.parametrize(("overrides", "fault", "kind"), _listing_error_cases())
def test_api_errors_are_reported_and_survived(
    bighub_api: FakeBighub,
    tmp_path: Path,
    overrides: dict[str, Any],
    fault: tuple[str, int] | None,
    kind: str,
) -> None:
    """401, 429, 5xx, network down, timeouts: reported in the run, the next run works."""
    wid, _ids = _outage(bighub_api, 2)
    if overrides.get("base_url") == "closed":
        overrides = {"base_url": f"http://127.0.0.1:{free_port()}"}
    if fault is not None:
        route, status = fault
        bighub_api.inject(route, status, delay=1.0)  # type: ignore[arg-type]  # status 0: hang

    async def body(store: SQLiteStore) -> None:
        broken = await Reconciler(
            _settings(bighub_api, [wid], **overrides), store, source="bighub"
        ).run()
        (w,) = broken.webhooks
        assert not broken.ok
        assert w.error_kinds == [kind]
        assert f"{kind}: " in w.errors[0]
        assert API_KEY not in w.errors[0]
        assert "bh_wrong_key" not in w.errors[0]
        assert bighub_api.replay_requests == []
        assert await store.replays_since(wid, 0) == {}
        bighub_api.clear_faults()
        fixed = await Reconciler(_settings(bighub_api, [wid]), store, source="bighub").run()
        assert fixed.ok
        assert fixed.webhooks[0].replay_succeeded == 2

    _with_store(tmp_path, body)


def test_client_retries_a_passing_429_itself(bighub_api: FakeBighub, tmp_path: Path) -> None:
    """One 429 is absorbed by the bighub client's own retry: the run has no error."""
    wid, _ids = _outage(bighub_api, 1)
    bighub_api.inject("deliveries", 429, times=1)

    async def body(store: SQLiteStore) -> None:
        report = await Reconciler(
            _settings(bighub_api, [wid], max_retries=1), store, source="bighub"
        ).run()
        assert report.ok
        assert report.webhooks[0].replay_succeeded == 1
        assert bighub_api.list_requests == 2

    _with_store(tmp_path, body)


def test_rate_limited_replays_stop_the_run_and_retry_next_time(
    bighub_api: FakeBighub, tmp_path: Path
) -> None:
    """A 429 on replay defers the rest of the run; failed asks do not start a cool-down."""
    wid, _ids = _outage(bighub_api, 4)
    bighub_api.inject("replay", 429)

    async def body(store: SQLiteStore) -> None:
        rec = Reconciler(_settings(bighub_api, [wid]), store, source="bighub")
        first = await rec.run()
        w = first.webhooks[0]
        assert (w.replay_requested, w.replay_failed, w.replay_succeeded) == (1, 1, 0)
        assert [r.action for r in w.rows] == ["replay_failed"] + ["deferred"] * 3
        assert w.error_kinds == ["rate_limited"]
        ledger = await store.replays_since(wid, 0)
        assert [r.outcome.split(":")[0] for r in ledger.values()] == ["failed"]
        bighub_api.clear_faults()
        second = await rec.run()
        assert second.ok
        assert second.webhooks[0].replay_succeeded == 4

    _with_store(tmp_path, body)


def test_rejected_replay_is_not_retried_within_cooldown(
    bighub_api: FakeBighub, tmp_path: Path
) -> None:
    """A 4xx for one delivery (e.g. 404) is recorded as rejected; the others still go."""
    wid, _ids = _outage(bighub_api, 3)
    bighub_api.inject("replay", 404, times=1)

    async def body(store: SQLiteStore) -> None:
        rec = Reconciler(_settings(bighub_api, [wid]), store, source="bighub")
        first = await rec.run()
        w = first.webhooks[0]
        assert [r.action for r in w.rows] == ["rejected", "replayed", "replayed"]
        assert (w.replay_failed, w.replay_succeeded) == (1, 2)
        # The webhook URL is still dead, so BIGHUB lists all three as failed again;
        # the rejected one is in its cool-down like the two asked for.
        second = await rec.run()
        assert second.webhooks[0].cooling_down == 3
        assert second.webhooks[0].replay_requested == 0

    _with_store(tmp_path, body)


@pytest.mark.parametrize("shape", ["html", "invalid_json", "no_list"])
def test_unreadable_deliveries_answer_is_logged_not_fatal(
    bighub_api: FakeBighub, tmp_path: Path, shape: Any
) -> None:
    """An answer without a readable list ends the webhook's pass with an error line."""
    from structlog.testing import capture_logs

    wid, _ids = _outage(bighub_api, 2)
    bighub_api.answer_shape = shape

    result: list[RunReport] = []

    async def run(store: SQLiteStore) -> None:
        rec = Reconciler(_settings(bighub_api, [wid]), store, source="bighub")
        result.append(await rec.run())

    with capture_logs() as logs:
        _with_store(tmp_path, run)
    (w,) = result[0].webhooks
    assert w.error_kinds == ["unreadable"]
    assert bighub_api.replay_requests == []
    assert any(e["event"] == "deliveries_unreadable" for e in logs)


def test_unreadable_entries_are_skipped_the_rest_replayed(
    bighub_api: FakeBighub, tmp_path: Path
) -> None:
    """Garbage entries are counted and reported; readable failed ones are still asked."""
    wid, ids = _outage(bighub_api, 2)
    bighub_api.answer_shape = "mixed"

    async def body(store: SQLiteStore) -> None:
        report = await Reconciler(_settings(bighub_api, [wid]), store, source="bighub").run()
        (w,) = report.webhooks
        assert w.unreadable == 5
        assert w.error_kinds == ["unreadable"]
        assert sorted(_asked(bighub_api, wid)) == sorted(ids)

    _with_store(tmp_path, body)


def test_replays_are_bounded_per_run_and_paced(bighub_api: FakeBighub, tmp_path: Path) -> None:
    """At most max_replays_per_run asks, spaced by 1 / replay_rate_per_second."""
    wid, _ids = _outage(bighub_api, 5)
    mono = [100.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        mono[0] += seconds

    async def body(store: SQLiteStore) -> None:
        rec = Reconciler(
            _settings(bighub_api, [wid], max_replays_per_run=3, replay_rate_per_second=2),
            store,
            source="bighub",
            monotonic=lambda: mono[0],
            sleep=sleep,
        )
        report = await rec.run()
        w = report.webhooks[0]
        assert (w.replay_requested, w.over_limit) == (3, 2)
        assert [r.action for r in w.rows].count("over_limit") == 2
        assert waits == [0.5, 0.5]

    _with_store(tmp_path, body)


def test_metrics_move_on_a_real_run(bighub_api: FakeBighub, tmp_path: Path) -> None:
    """Deliveries seen, failed seen, replays requested / succeeded / failed, last run time."""
    wid, _ids = _outage(bighub_api, 3)
    metrics = Metrics()

    async def body(store: SQLiteStore) -> None:
        await _hold(store, "evt_0")
        rec = Reconciler(
            _settings(bighub_api, [wid]),
            store,
            source="bighub",
            metrics=metrics,
            clock=lambda: 1234.5,
        )
        await rec.run()

    _with_store(tmp_path, body)
    text = generate_latest(metrics.registry).decode()
    assert f'bighub_siem_upstream_deliveries_seen_total{{webhook="{wid}"}} 3.0' in text
    assert f'bighub_siem_upstream_failed_deliveries_seen_total{{webhook="{wid}"}} 3.0' in text
    assert f'bighub_siem_upstream_replays_total{{result="requested",webhook="{wid}"}} 2.0' in text
    assert f'bighub_siem_upstream_replays_total{{result="succeeded",webhook="{wid}"}} 2.0' in text
    assert f'bighub_siem_upstream_replays_total{{result="failed",webhook="{wid}"}} 0.0' in text
    assert "bighub_siem_upstream_last_run_timestamp 1234.5" in text


def test_bad_webhook_id_is_refused_before_any_call(bighub_api: FakeBighub, tmp_path: Path) -> None:
    """A webhook id that could change the API path raises ValueError; nothing is asked."""

    async def body(store: SQLiteStore) -> None:
        rec = Reconciler(_settings(bighub_api, ["wh_1"]), store, source="bighub")
        with pytest.raises(ValueError, match="webhook ids"):
            await rec.run(webhook_ids=["../admin"])

    _with_store(tmp_path, body)
    assert bighub_api.list_requests == 0
