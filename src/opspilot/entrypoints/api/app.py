"""The aiohttp application: routes, middlewares, and request telemetry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

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
from opspilot.entrypoints.api.body import release_body
from opspilot.entrypoints.api.errors import error_middleware, error_response
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
    services(request).telemetry.request_served(
        request.method, template, response.status, time.perf_counter() - started,
        INGEST_ROUTES.get(template))
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


@web.middleware
async def body_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Gives back the request's share of the byte budget once it is answered, and closes the
    connection after an answer given before the body was read (an early 401, 413, 415):
    the rest of such a body is never read, let alone inflated (server_options lingers 0 s)."""
    try:
        response = await handler(request)
    finally:
        release_body(request)
    if request.body_exists and not request.content.is_eof() and response.status >= 400:
        response.force_close()
    return response


def server_options(svc: ApiServices) -> dict[str, Any]:
    """aiohttp server settings for the API (AppRunner / TestServer keyword arguments):
    bodies are inflated by `body.read_body` after authentication, never by the parser; a
    connection idle or still sending its headers is closed after `http.idle_seconds`; an
    unread body is not drained (closed at once). Header lines and fields stay at aiohttp's
    8,190 bytes, 128 headers."""
    return {
        "auto_decompress": False,
        "keepalive_timeout": svc.http.idle_seconds,
        "lingering_time": 0,
        "access_log": None,
    }


BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s")


def limit_connections(server: web.Server, limit: int) -> None:
    """At most `limit` open connections on `server` (a started runner's `.server`): one
    more is answered 503 JSON and closed at once. aiohttp has no such setting, so the
    server's `connection_made` hook is wrapped."""
    admit = server.connection_made
    body = orjson.dumps({"error": {"code": "service_unavailable", "message":
                                   f"too many open connections (at most {limit})",
                                   "details": {"retry_after": 1}}})

    def connection_made(handler: Any, transport: asyncio.Transport) -> None:
        admit(handler, transport)
        if len(server.connections) > limit:
            transport.write(BUSY % (len(body), body))
            transport.close()

    server.connection_made = connection_made  # type: ignore[method-assign]


class JsonErrorHandler(RequestHandler):
    """aiohttp answers what it cannot parse (a header line over 8,190 bytes, a duplicate
    Content-Length, a bad header name or request line) itself, in text/plain, before any
    middleware runs: this answers with the standard JSON error body instead."""

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None, message: str | None = None
                     ) -> web.StreamResponse:
        if request.writer.output_size > 0 or status >= 500:
            return super().handle_error(request, status, exc, message)
        self.logger.debug("refused a malformed request from %s: %s", request.remote, exc)
        detail = getattr(exc, "message", None) or message or HTTPStatus(status).phrase
        response = error_response(status, "bad_request" if status == 400 else "http_error",
                                  f"malformed HTTP request: {detail}"[:500],
                                  {"field": "request"})
        response.force_close()
        return response


class JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return JsonErrorHandler(self, loop=self._loop, **self._kwargs)


async def start_api_site(app: web.Application, host: str, port: int) -> web.AppRunner:
    """The API served with its limits (server_options, limit_connections) and with its
    protocol errors in JSON (the runner's server made a JsonErrorServer: aiohttp builds
    the server inside AppRunner.setup and has no hook for the handler class)."""
    svc = app[SERVICES]
    runner = web.AppRunner(app, **server_options(svc))
    await runner.setup()
    assert runner.server is not None
    runner.server.__class__ = JsonErrorServer
    limit_connections(runner.server, svc.http.max_connections)
    await web.TCPSite(runner, host, port).start()
    return runner


def create_app(svc: ApiServices) -> web.Application:
    # Error handling sits inside telemetry so that mapped errors are counted with their status.
    app = web.Application(
        middlewares=[telemetry_middleware, body_middleware, error_middleware,
                     body_limit_middleware],
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
