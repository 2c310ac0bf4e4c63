"""Prometheus instruments for every process, each set on its own registry.

Label cardinality is bounded: routes are the route templates (never raw paths), statuses are
exact codes, projects are capped (after `MAX_PROJECT_LABELS` distinct ids the rest count as
"other").
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import Metric

from opspilot.domain.alerts import AlertRule
from opspilot.domain.ports import (
    AlertObserver,
    CompactionObserver,
    CompactionReport,
    RetentionObserver,
    WorkerObserver,
)

MAX_PROJECT_LABELS = 100
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# The query routes and the `kind` each one's latency is observed under (a closed set).
QUERY_KINDS = {
    "/api/metrics/query": "metrics_query",
    "/api/metrics/query-multiple": "metrics_query_multiple",
    "/api/metrics/histogram": "metrics_histogram",
    "/api/metrics/anomalies": "metrics_anomalies",
    "/api/metrics/names": "metrics_names",
    "/api/metrics/services": "metrics_services",
    "/api/metrics/tags": "metrics_tags",
    "/api/logs/query": "logs_search",
    "/api/logs/volume": "logs_volume",
    "/api/logs/error-spikes": "logs_error_spikes",
    "/api/logs/patterns": "logs_patterns",
    "/api/logs/{log_id}/context": "logs_context",
}


class _Included:
    """A registry seen as one collector of another (no `describe`: never a name clash)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        return self._registry.collect()


def include_registries(target: CollectorRegistry, others: Iterable[CollectorRegistry]) -> None:
    """Serve `others` on `target`'s /metrics too (the one-process `serve` shape: API, worker
    and alert instruments behind the API's /metrics). Each family must live in one of them."""
    for other in others:
        if other is not target:
            target.register(_Included(other))


class ProjectLabels:
    """The `project` label of per-project series: the project id when the operator enabled
    them (OPSPILOT_METRICS_PER_PROJECT; /metrics is unauthenticated, so by default it does
    not list every project id), else `all`."""

    def __init__(self, cap: int = MAX_PROJECT_LABELS, enabled: bool = True) -> None:
        self._seen: set[str] = set()
        self._cap = cap
        self._enabled = enabled

    def __call__(self, project_id: str) -> str:
        if not self._enabled:
            return "all"
        if project_id in self._seen:
            return project_id
        if len(self._seen) < self._cap:
            self._seen.add(project_id)
            return project_id
        return "other"


class ApiTelemetry:
    def __init__(self, registry: CollectorRegistry | None = None,
                 per_project: bool = True) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.project_label = ProjectLabels(enabled=per_project)
        self.requests = Counter(
            "opspilot_http_requests_total", "HTTP requests by route and status",
            ["method", "route", "status"], registry=r,
        )
        self.latency = Histogram(
            "opspilot_http_request_duration_seconds", "HTTP request latency by route",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.ingest_accepted = Counter(
            "opspilot_ingest_accepted_total", "Items accepted for ingestion",
            ["kind", "project"], registry=r,
        )
        self.ingest_rejected = Counter(
            "opspilot_ingest_rejected_total", "Ingest requests refused", ["kind", "reason"],
            registry=r,
        )
        self.cache_lookups = Counter(
            "opspilot_query_cache_lookups_total", "Query cache lookups", ["kind", "result"],
            registry=r,
        )
        self.query_latency = Histogram(
            "opspilot_query_duration_seconds", "Query latency by kind", ["kind"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.limiter_failures = Counter(
            "opspilot_rate_limiter_failures_total",
            "Rate limiter store errors (requests were let through)", registry=r,
        )
        self.rate_limited = Counter(
            "opspilot_rate_limited_total", "Requests refused by the rate limiter", ["scope"],
            registry=r,
        )

    def cache_lookup(self, kind: str, hit: bool) -> None:
        self.cache_lookups.labels(kind, "hit" if hit else "miss").inc()

    def query_answered(self, route: str, status: int, seconds: float) -> None:
        """Query latency by kind, for the query routes' answered (non-error) requests."""
        kind = QUERY_KINDS.get(route)
        if kind is not None and status < 400:
            self.query_latency.labels(kind).observe(seconds)


class WorkerTelemetry(WorkerObserver):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.written = Counter(
            "opspilot_worker_records_written_total", "Records written to the stores", ["stream"],
            registry=r,
        )
        self.batches = Histogram(
            "opspilot_worker_batch_size", "Records per store write", ["stream"],
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000), registry=r,
        )
        self.write_latency = Histogram(
            "opspilot_worker_write_duration_seconds", "Store write latency", ["stream"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.retries = Counter(
            "opspilot_worker_retries_total", "Transient write failures retried", ["stream"],
            registry=r,
        )
        self.dead_letters = Counter(
            "opspilot_worker_dead_lettered_total", "Messages sent to the dead-letter queue",
            ["stream"], registry=r,
        )
        self.queue_depth = Gauge(
            "opspilot_queue_depth",
            "Messages waiting in a queue, sampled every few seconds (the consumer lag)",
            ["queue"], registry=r,
        )
        self.last_write = Gauge(
            "opspilot_worker_last_write_timestamp_seconds",
            "When this worker last committed a batch (Unix time)", ["stream"], registry=r,
        )

        # What an autoscaler needs besides the depth (ADR 0028): how old the waiting work
        # is, and how busy the consumers already are.
        self.message_age = Gauge(
            "opspilot_queue_message_age_seconds",
            "Age of the oldest waiting message: accept → delivery of the last message taken "
            "(FIFO), growing while the queue holds messages and none is taken; 0 when empty",
            ["queue"], registry=r,
        )
        self.busy = Counter(
            "opspilot_worker_busy_seconds_total",
            "Seconds this worker spent writing to the stores", ["stream"], registry=r,
        )
        self.utilisation = Gauge(
            "opspilot_worker_utilisation",
            "Share of the last sampling interval this worker spent writing (0-1): near 1, "
            "more replicas help; near 0 with a deep queue, the stores are the bottleneck",
            registry=r,
        )
        self._busy_seconds = 0.0
        self._sampled_at: tuple[float, float] | None = None  # (monotonic, busy seconds)
        self._last_delivery: dict[str, tuple[float, float]] = {}  # stream → (monotonic, age)
        self._monotonic = time.monotonic

    def delivered(self, stream: str, age_seconds: float) -> None:
        self._last_delivery[stream] = (self._monotonic(), age_seconds)
        self.message_age.labels(stream).set(age_seconds)

    def queue_sampled(self, queue: str, depth: int) -> None:
        """From the depth sampler: an empty queue has no age; a non-empty one that gave this
        worker nothing since the last message ages from that message's age on (a lower
        bound of the head's age: the worker may be stuck, e.g. its store is down)."""
        if queue.endswith(".dlq"):
            return
        if depth == 0:
            self.message_age.labels(queue).set(0.0)
            return
        last = self._last_delivery.get(queue)
        if last is not None:
            at, age = last
            self.message_age.labels(queue).set(age + max(0.0, self._monotonic() - at))

    def sample_utilisation(self) -> None:
        now = self._monotonic()
        if self._sampled_at is not None:
            then, busy = self._sampled_at
            if now > then:
                self.utilisation.set(min(1.0, (self._busy_seconds - busy) / (now - then)))
        self._sampled_at = (now, self._busy_seconds)

    def batch_written(self, stream: str, records: int, seconds: float) -> None:
        self._busy_seconds += seconds
        self.busy.labels(stream).inc(seconds)
        self.written.labels(stream).inc(records)
        self.last_write.labels(stream).set(time.time())
        self.batches.labels(stream).observe(records)
        self.write_latency.labels(stream).observe(seconds)

    def retried(self, stream: str, reason: str) -> None:
        self.retries.labels(stream).inc()

    def dead_lettered(self, stream: str, reason: str) -> None:
        self.dead_letters.labels(stream).inc()


EVALUATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


COMPACTION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class AlertTelemetry(AlertObserver, RetentionObserver, CompactionObserver):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.evaluation_duration = Histogram(
            "opspilot_alert_evaluation_duration_seconds",
            "Time to evaluate one batch of rules (one chunk of a tick)",
            buckets=EVALUATION_BUCKETS, registry=r,
        )
        self.rules_evaluated = Counter(
            "opspilot_alert_rules_evaluated_total", "Rule evaluations", registry=r
        )
        self.incidents_opened = Counter(
            "opspilot_alert_incidents_opened_total", "Incidents opened by rules", registry=r
        )
        self.incidents_resolved = Counter(
            "opspilot_alert_incidents_resolved_total",
            "Incidents resolved because their condition cleared", registry=r,
        )
        self.notifications = Counter(
            "opspilot_alert_notifications_total",
            "Notifications by channel type and final outcome (delivered, failed, timed_out)",
            ["channel_type", "outcome"], registry=r,
        )
        self.ticks = Counter(
            "opspilot_alert_ticks_total", "Ticks seen by this replica (owned or skipped)",
            ["result"], registry=r,
        )
        self.retention_runs = Counter(
            "opspilot_retention_runs_total", "Retention runs by store and outcome (ok, failed)",
            ["store", "outcome"], registry=r,
        )
        self.retention_dropped = Counter(
            "opspilot_retention_dropped_total",
            "Partitions or daily indices dropped by retention", ["store"], registry=r,
        )
        self.compaction_duration = Histogram(
            "opspilot_compaction_duration_seconds", "Time of one compaction run",
            buckets=COMPACTION_BUCKETS, registry=r,
        )
        self.compaction_points = Counter(
            "opspilot_compaction_points_total", "Hot metric points moved into blocks",
            registry=r,
        )
        self.compaction_periods = Counter(
            "opspilot_compaction_periods_total", "Periods (series-hours) compacted or merged",
            registry=r,
        )
        self.compaction_backlog = Gauge(
            "opspilot_compaction_backlog_periods",
            "Closed periods still holding hot points after the last run", registry=r,
        )

    def evaluated(self, rules: int, seconds: float) -> None:
        self.rules_evaluated.inc(rules)
        self.evaluation_duration.observe(seconds)

    def incident_opened(self, rule: AlertRule) -> None:
        self.incidents_opened.inc()

    def incident_resolved(self, rule: AlertRule) -> None:
        self.incidents_resolved.inc()

    def notified(self, channel_type: str, outcome: str) -> None:
        self.notifications.labels(channel_type, outcome).inc()

    def ticked(self, owned: bool, rules: int) -> None:
        self.ticks.labels("owned" if owned else "skipped").inc()

    def retention_ran(self, store: str, dropped: int, failed: bool) -> None:
        self.retention_runs.labels(store, "failed" if failed else "ok").inc()
        self.retention_dropped.labels(store).inc(dropped)

    def compaction_ran(self, report: CompactionReport) -> None:
        self.compaction_duration.observe(report.seconds)
        self.compaction_points.inc(report.points)
        self.compaction_periods.inc(report.periods)
        self.compaction_backlog.set(report.backlog)


async def start_metrics_server(registry: CollectorRegistry, host: str,
                               port: int) -> web.AppRunner:
    """A small HTTP server exposing `registry` on /metrics (and /healthz): the worker's and
    the alert process's side server."""
    async def metrics(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
