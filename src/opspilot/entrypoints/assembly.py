"""The API's view of the container: what its handlers reach through the app (`ApiServices`),
every piece asked of the container (kept out of the handlers)."""

from __future__ import annotations

from opspilot.container import Container
from opspilot.entrypoints.api.routes_alerts import alert_routes
from opspilot.entrypoints.api.state import ApiServices, HttpLimits, RateLimits, ReadinessCheck


def readiness_checks(container: Container) -> dict[str, ReadinessCheck]:
    backends = container.config.backends()
    return {
        f"metrics ({backends['sql']})": container.metric_store().ping,
        f"logs ({backends['logs']})": container.log_store().ping,
        f"queue ({backends['queue']})": container.queue().ping,
    }


def api_services(container: Container) -> ApiServices:
    config = container.config
    return ApiServices(
        auth=container.authenticator(),
        accounts=container.accounts(),
        ingest=container.ingest(),
        metrics=container.metric_queries(),
        logs=container.log_queries(),
        prometheus=container.prometheus_queries(),
        limiter=container.rate_limiter(),
        clock=container.clock(),
        telemetry=container.api_telemetry(),
        rate_limits=RateLimits(
            ingest_rate=config.ingest_rate(),
            ingest_burst=config.ingest_burst(),
            query_rate=config.query_rate(),
            query_burst=config.query_burst(),
            admin_rate=config.admin_rate(),
            admin_burst=config.admin_burst(),
            enabled=config.rate_limits_enabled(),
        ),
        readiness=readiness_checks(container),
        max_body_bytes=config.max_body_bytes(),
        admin_token=config.admin_token(),
        budget=container.request_budget(),
        auth_failures=container.auth_failures(),
        http=HttpLimits(config.http_idle_seconds(), config.http_body_seconds(),
                        config.max_connections()),
        extra_routes=[alert_routes(container.alert_rules())],
    )

