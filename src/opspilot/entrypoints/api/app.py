"""The aiohttp application: routes, middlewares, and request telemetry."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from opspilot.entrypoints.api import (
    openapi,
    routes_accounts,
    routes_ingest,
    routes_logs,
    routes_metrics,
    routes_prometheus,
    routes_system,
    routes_ui,
)
from opspilot.entrypoints.api.errors import error_middleware
from opspilot.entrypoints.api.guards import add_rate_headers
from opspilot.entrypoints.api.otlp import routes as routes_otlp
from opspilot.entrypoints.api.remote_write import routes as routes_remote_write
from opspilot.entrypoints.api.state import (
    ANCHOR_PATH,
    MOUNT_ANCHOR,
    SERVICES,
    ApiServices,
    mount_prefix,
    services,
)

# Every ingest door, JSON or standard protocol, and the kind of data it takes.
INGEST_ROUTES = {
    "/api/ingest/metrics": "metrics", "/v1/metrics": "metrics", "/otlp/v1/metrics": "metrics",
    "/api/v1/write": "metrics",
    "/api/ingest/logs": "logs", "/v1/logs": "logs", "/otlp/v1/logs": "logs",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def telemetry_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    response = await handler(request)
    route = request.match_info.route.resource
    template = route.canonical if route is not None else "unmatched"
    # Labels are OpsPilot's own paths, wherever a host mounted it.
    template = template.removeprefix(mount_prefix(request.app)) or template
    telemetry = services(request).telemetry
    telemetry.requests.labels(request.method, template, str(response.status)).inc()
    elapsed = time.perf_counter() - started
    telemetry.latency.labels(request.method, template).observe(elapsed)
    telemetry.query_answered(template, response.status, elapsed)
    kind = INGEST_ROUTES.get(template)
    if kind is not None and response.status >= 400:
        telemetry.ingest_rejected.labels(kind, str(response.status)).inc()
    return response


@web.middleware
async def body_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp builds each request with the root application's `client_max_size`: mounted in
    a host's app, OpsPilot's routes would take the host's limit (1 MiB by default) instead
    of `max_body_bytes`."""
    if not mount_prefix(request.app):
        return await handler(request)
    clone = request.clone(client_max_size=services(request).max_body_bytes)
    try:
        return await handler(clone)
    finally:  # the response is prepared with the host's request: hand the state back
        request.update(clone)


def create_app(svc: ApiServices) -> web.Application:
    # Error handling sits inside telemetry so that mapped errors are counted with their status.
    app = web.Application(
        middlewares=[telemetry_middleware, error_middleware, body_limit_middleware],
        client_max_size=svc.max_body_bytes,
    )
    app[SERVICES] = svc
    for register in (
        routes_system.register,
        routes_ingest.register,
        routes_otlp.register,
        routes_remote_write.register,
        routes_metrics.register,
        routes_prometheus.register,
        routes_logs.register,
        routes_accounts.register,
        openapi.register,
        routes_ui.register,
        *svc.extra_routes,
    ):
        register(app)
    app.on_response_prepare.append(add_rate_headers)
    app[MOUNT_ANCHOR] = next(r for r in app.router.resources() if r.canonical == ANCHOR_PATH)
    return app
