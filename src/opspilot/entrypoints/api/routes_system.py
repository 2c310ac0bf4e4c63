"""Health, readiness, Prometheus metrics, and who a token is (/api/me)."""

from __future__ import annotations

import asyncio
from typing import Literal

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from opspilot.entrypoints.api.guards import query_principal
from opspilot.entrypoints.api.responses import HEALTHY, json_answer, me_doc, readiness_doc
from opspilot.entrypoints.api.state import services

READINESS_TIMEOUT = 3.0


async def healthz(request: web.Request) -> web.Response:
    return json_answer(HEALTHY)


async def readyz(request: web.Request) -> web.Response:
    checks = services(request).readiness
    results = await asyncio.gather(*(_check(fn) for fn in checks.values()))
    report = dict(zip(checks, results, strict=True))
    ready = all(r == "ok" for r in report.values())
    limiter = services(request).limiter_health
    status: Literal["ready", "degraded", "unready"] = "ready" if ready else "unready"
    if ready and limiter.down_since is not None:
        # Still ready (the limits fail open by design), but not silently so.
        report["rate limits"] = (f"degraded: failing open since"
                                 f" {limiter.down_since.isoformat()}: {limiter.reason}"[:300])
        status = "degraded"
    return json_answer(readiness_doc(status, report), 200 if ready else 503)


async def _check(fn) -> str:  # type: ignore[no-untyped-def]
    try:
        await asyncio.wait_for(fn(), READINESS_TIMEOUT)
        return "ok"
    except Exception as exc:  # readiness reports every failure, whatever it is
        return f"failed: {type(exc).__name__}: {exc}"[:300]


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(services(request).telemetry.registry)
    response = web.Response(body=body)
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


async def me(request: web.Request) -> web.Response:
    """The token's user and projects: how a client (the explorer) offers a project picker."""
    svc = services(request)
    principal = await query_principal(request)
    projects = await svc.auth.projects(principal)
    return json_answer(me_doc(principal, projects))


def register(app: web.Application) -> None:
    app.router.add_get("/api/me", me)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
