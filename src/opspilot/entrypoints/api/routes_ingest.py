"""POST /api/ingest/metrics and /api/ingest/logs (X-API-Key)."""

from __future__ import annotations

from aiohttp import web

from opspilot.entrypoints.api.guards import ingest_identity
from opspilot.entrypoints.api.parsing import json_body
from opspilot.entrypoints.api.responses import accepted_doc, json_answer
from opspilot.entrypoints.api.schemas import LogsIngestBody, MetricsIngestBody
from opspilot.entrypoints.api.state import services


async def ingest_metrics(request: web.Request) -> web.Response:
    identity = await ingest_identity(request)
    body = await json_body(request, MetricsIngestBody)
    accepted = await services(request).ingest.accept_metrics(identity, body.metrics)
    services(request).telemetry.accepted("metrics", identity.project_id, accepted.accepted)
    return _accepted(accepted.batch_id, accepted.accepted)


async def ingest_logs(request: web.Request) -> web.Response:
    identity = await ingest_identity(request)
    body = await json_body(request, LogsIngestBody)
    accepted = await services(request).ingest.accept_logs(identity, body.logs)
    services(request).telemetry.accepted("logs", identity.project_id, accepted.accepted)
    return _accepted(accepted.batch_id, accepted.accepted)


def _accepted(batch_id: str, count: int) -> web.Response:
    return json_answer(accepted_doc(count, batch_id), 202)


def register(app: web.Application) -> None:
    app.router.add_post("/api/ingest/metrics", ingest_metrics)
    app.router.add_post("/api/ingest/logs", ingest_logs)
