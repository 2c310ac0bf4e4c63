"""The AI service's instruments."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from opspilot.adapters.prometheus.api import LATENCY_BUCKETS


class AiTelemetry:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "opspilot_ai_requests_total", "AI service requests by route and status",
            ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram(
            "opspilot_ai_request_duration_seconds", "AI service latency by route",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)

    def request_served(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)
