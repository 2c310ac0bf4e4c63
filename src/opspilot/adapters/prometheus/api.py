"""The API's instruments. Label cardinality is bounded: routes are the route templates (never
raw paths), statuses are exact codes, projects are capped (after `MAX_PROJECT_LABELS`
distinct ids the rest count as "other")."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

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

    # -- the hooks the API calls (handlers and middlewares never touch an instrument) ----

    def request_served(self, method: str, route: str, status: int, seconds: float,
                       ingest_kind: str | None = None) -> None:
        """One answered request, by route template; `ingest_kind` for the ingest doors
        (metrics or logs), whose refusals are counted by kind too."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)
        self.query_answered(route, status, seconds)
        if ingest_kind is not None and status >= 400:
            self.ingest_rejected.labels(ingest_kind, str(status)).inc()

    def accepted(self, kind: str, project_id: str, items: int) -> None:
        """Items of one kind (metrics, logs) accepted for a project."""
        self.ingest_accepted.labels(kind, self.project_label(project_id)).inc(items)

    def refused_by_limiter(self, scope: str) -> None:
        self.rate_limited.labels(scope).inc()

    def limiter_failed(self) -> None:
        """The rate limiter's store failed (the request was let through)."""
        self.limiter_failures.inc()

    def cache_lookup(self, kind: str, hit: bool) -> None:
        self.cache_lookups.labels(kind, "hit" if hit else "miss").inc()

    def query_answered(self, route: str, status: int, seconds: float) -> None:
        """Query latency by kind, for the query routes' answered (non-error) requests."""
        kind = QUERY_KINDS.get(route)
        if kind is not None and status < 400:
            self.query_latency.labels(kind).observe(seconds)
