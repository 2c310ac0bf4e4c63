"""What the API handlers reach through the app: use cases, limits and telemetry."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

import attrs
from aiohttp import web

from opspilot.adapters.prometheus.api import ApiTelemetry
from opspilot.application.accounts import Accounts
from opspilot.application.admission import ByteBudget
from opspilot.application.auth import Authenticator, FailureThrottle
from opspilot.application.ingest import IngestService
from opspilot.application.log_queries import LogQueries
from opspilot.application.metric_queries import MetricQueries
from opspilot.application.promql.queries import PrometheusQueries
from opspilot.domain.ports import Clock, RateLimiter

log = logging.getLogger("opspilot.api")


@attrs.frozen
class RateLimits:
    """Token buckets: sustained rate per second and burst, per API key and per token."""

    ingest_rate: float = 50.0
    ingest_burst: int = 200
    query_rate: float = 20.0
    query_burst: int = 100
    # The admin surface answers a handful of operator calls; this bounds guessing its token
    # (per client address).
    admin_rate: float = 1.0
    admin_burst: int = 20
    enabled: bool = True


@attrs.frozen
class HttpLimits:
    """What one connection may hold (aiohttp's own limits are set from these, app.py)."""

    idle_seconds: float = 15.0
    body_seconds: float = 30.0
    max_connections: int = 1000


@attrs.define
class LimiterHealth:
    """Rate limits fail open when the limiter (Redis) cannot answer: that must not be
    silent. The first failure of an outage is logged (not every request's), its end too,
    and /readyz reports `degraded` while it lasts."""

    down_since: datetime | None = None
    reason: str = ""

    def failed(self, now: datetime, reason: str) -> None:
        if self.down_since is None:
            log.warning("rate limiter unavailable, rate limits are OFF (failing open): %s",
                        reason)
            self.down_since = now
        self.reason = reason

    def worked(self, now: datetime) -> None:
        if self.down_since is not None:
            log.warning("rate limiter is back after %.0f s; rate limits are on again",
                        (now - self.down_since).total_seconds())
            self.down_since = None


ReadinessCheck = Callable[[], Awaitable[None]]


@attrs.define
class ApiServices:
    auth: Authenticator
    accounts: Accounts
    ingest: IngestService
    metrics: MetricQueries
    logs: LogQueries
    prometheus: PrometheusQueries
    limiter: RateLimiter
    clock: Clock
    telemetry: ApiTelemetry
    rate_limits: RateLimits = RateLimits()
    readiness: dict[str, ReadinessCheck] = attrs.Factory(dict)
    extra_routes: list[Callable[[web.Application], None]] = attrs.Factory(list)
    max_body_bytes: int = 10 * 1024 * 1024
    admin_token: str | None = None  # None: no /api/admin/* at all
    budget: ByteBudget = attrs.Factory(lambda: ByteBudget(32 * 1024 * 1024))
    auth_failures: FailureThrottle | None = None
    http: HttpLimits = HttpLimits()
    limiter_health: LimiterHealth = attrs.Factory(LimiterHealth)


SERVICES = web.AppKey("services", ApiServices)


def services(request: web.Request) -> ApiServices:
    return request.app[SERVICES]


# A route whose own path is known: once a host mounts the app (`add_subapp(prefix, app)`),
# aiohttp prefixes every resource, and the anchor's path tells the prefix.
ANCHOR_PATH = "/healthz"
MOUNT_ANCHOR = web.AppKey("mount_anchor", web.AbstractResource)


def mount_prefix(app: web.Application) -> str:
    """The prefix a host mounted this application under; "" when it is the root app."""
    return app[MOUNT_ANCHOR].canonical.removesuffix(ANCHOR_PATH)
