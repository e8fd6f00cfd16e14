"""Prometheus metrics, one registry per running service (no global state)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _SnapshotCollector(Collector):
    """Serves gauges from the last store snapshot (refreshed by the service)."""

    def __init__(self) -> None:
        self.pending: dict[str, int] = {}
        self.dead: dict[str, int] = {}
        self.oldest_age: dict[str, float] = {}
        self.attempts: dict[str, int] = {}
        self.spool_bytes = 0
        self.spool_events = 0
        self.dead_bytes = 0
        self.dead_events = 0
        # The limits, so alerts and dashboards can compare usage with them (store settings).
        self.spool_max_bytes = 0
        self.spool_max_events = 0
        self.dead_max_bytes = 0
        self.sink_up: dict[str, bool] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        def per_sink(
            name: str, doc: str, values: dict[str, float] | dict[str, int]
        ) -> GaugeMetricFamily:
            fam = GaugeMetricFamily(name, doc, labels=["sink"])
            for sink, value in sorted(values.items()):
                fam.add_metric([sink], float(value))
            return fam

        yield per_sink(
            "bighub_siem_sink_pending",
            "Log events after the sink's cursor (counted up to 1M; includes types its"
            " routes skip).",
            self.pending,
        )
        yield per_sink("bighub_siem_sink_dead", "Dead letters per sink.", self.dead)
        yield per_sink(
            "bighub_siem_sink_oldest_pending_age_seconds",
            "Age of the oldest event the sink still has to deliver.",
            self.oldest_age,
        )
        yield per_sink(
            "bighub_siem_sink_head_attempts",
            "Charged failed attempts of the event at the head of the sink's queue.",
            self.attempts,
        )
        yield per_sink(
            "bighub_siem_sink_up",
            "1 when the sink's last send or health check succeeded.",
            {k: int(v) for k, v in self.sink_up.items()},
        )
        yield GaugeMetricFamily(
            "bighub_siem_spool_bytes", "Undelivered body bytes held.", value=self.spool_bytes
        )
        yield GaugeMetricFamily(
            "bighub_siem_spool_events", "Undelivered events held.", value=self.spool_events
        )
        yield GaugeMetricFamily(
            "bighub_siem_dead_letter_bytes",
            "Body bytes held by dead letters (their own limit, not the spool quota).",
            value=self.dead_bytes,
        )
        yield GaugeMetricFamily(
            "bighub_siem_dead_letter_events", "Dead letters held.", value=self.dead_events
        )
        yield GaugeMetricFamily(
            "bighub_siem_spool_max_bytes",
            "Quota: undelivered body bytes held before ingress answers 503.",
            value=self.spool_max_bytes,
        )
        yield GaugeMetricFamily(
            "bighub_siem_spool_max_events",
            "Quota: undelivered events held before ingress answers 503.",
            value=self.spool_max_events,
        )
        yield GaugeMetricFamily(
            "bighub_siem_dead_letter_max_bytes",
            "Limit: dead-letter body bytes before a sink that needs one more holds.",
            value=self.dead_max_bytes,
        )


class Metrics:
    """Every metric the receiver exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter("bighub_siem_requests", "Webhook requests received.", registry=r)
        self.accepted = Counter("bighub_siem_events_accepted", "New events stored.", registry=r)
        self.duplicates = Counter(
            "bighub_siem_events_duplicate", "Events already held.", registry=r
        )
        self.rejected = Counter(
            "bighub_siem_requests_rejected", "Requests refused, by reason.", ["reason"], registry=r
        )
        self.ingest_latency = Histogram(
            "bighub_siem_ingest_seconds",
            "Time from request start to answer for stored events (includes the fsync).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.delivered = Counter(
            "bighub_siem_sink_delivered", "Events confirmed by a sink.", ["sink"], registry=r
        )
        self.retried = Counter(
            "bighub_siem_sink_retried",
            "Events scheduled for another attempt.",
            ["sink"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "bighub_siem_sink_dead_lettered", "Events moved to dead letters.", ["sink"], registry=r
        )
        self._edge_metrics(r)
        self.last_prune = Gauge(
            "bighub_siem_last_prune_timestamp", "When dedup ids were last pruned.", registry=r
        )
        self._upstream_metrics(r)
        self.snapshot = _SnapshotCollector()
        r.register(self.snapshot)

    def _edge_metrics(self, r: CollectorRegistry) -> None:
        # The HTTP edge (receiver/edge/) and the requests outside the webhook route.
        self.edge_refused = Counter(
            "bighub_siem_edge_refused",
            "Connections and requests the HTTP edge cut off before an application answered,"
            " by listener and reason.",
            ["listener", "reason"],
            registry=r,
        )
        self.connections_open = Gauge(
            "bighub_siem_connections_open",
            "Open HTTP connections, by listener.",
            ["listener"],
            registry=r,
        )
        self.http_requests = Counter(
            "bighub_siem_http_requests",
            "Requests to routes other than the webhook (probes, metrics, admin), by listener,"
            " route and status.",
            ["listener", "route", "status"],
            registry=r,
        )

    def _upstream_metrics(self, r: CollectorRegistry) -> None:
        # Upstream replay (receiver/reconcile.py); dry runs do not count.
        self.upstream_deliveries = Counter(
            "bighub_siem_upstream_deliveries_seen",
            "Deliveries read from the BIGHUB API, by webhook.",
            ["webhook"],
            registry=r,
        )
        self.upstream_failed = Counter(
            "bighub_siem_upstream_failed_deliveries_seen",
            "Deliveries BIGHUB reports as failed, by webhook.",
            ["webhook"],
            registry=r,
        )
        self.replays = Counter(
            "bighub_siem_upstream_replays",
            "Replays asked of BIGHUB, by webhook and result (requested, succeeded, failed).",
            ["webhook", "result"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "bighub_siem_upstream_errors",
            "BIGHUB API errors met by the reconciler, by kind.",
            ["kind"],
            registry=r,
        )
        self.upstream_last_run = Gauge(
            "bighub_siem_upstream_last_run_timestamp",
            "When the last reconcile run ended.",
            registry=r,
        )
