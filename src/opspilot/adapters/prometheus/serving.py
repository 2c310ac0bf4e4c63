"""Serving registries: one /metrics for several registries of a process, and the small side
server of the processes that have no HTTP API of their own (worker, alert process)."""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric


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
