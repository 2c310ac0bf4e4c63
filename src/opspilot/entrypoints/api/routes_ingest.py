"""POST /api/ingest/metrics and /api/ingest/logs (X-API-Key)."""

from __future__ import annotations

import orjson
from aiohttp import web

from opspilot.domain.errors import ValidationError
from opspilot.domain.logs import LogLevel, LogRecord
from opspilot.entrypoints.api.guards import ingest_identity
from opspilot.entrypoints.api.parsing import json_body
from opspilot.entrypoints.api.schemas import LogIn, LogsIngestBody, MetricsIngestBody
from opspilot.entrypoints.api.state import services

MAX_CONTEXT_BYTES = 16_384


async def ingest_metrics(request: web.Request) -> web.Response:
    identity = await ingest_identity(request)
    body = await json_body(request, MetricsIngestBody)
    accepted = await services(request).ingest.accept_metrics(identity, body.metrics)
    telemetry = services(request).telemetry
    telemetry.ingest_accepted.labels("metrics", telemetry.project_label(identity.project_id)).inc(
        accepted.accepted
    )
    return _accepted(accepted.batch_id, accepted.accepted)


async def ingest_logs(request: web.Request) -> web.Response:
    identity = await ingest_identity(request)
    body = await json_body(request, LogsIngestBody)
    drafts = [_log_draft(i, item) for i, item in enumerate(body.logs)]
    accepted = await services(request).ingest.accept_logs(identity, drafts)
    telemetry = services(request).telemetry
    telemetry.ingest_accepted.labels("logs", telemetry.project_label(identity.project_id)).inc(
        accepted.accepted
    )
    return _accepted(accepted.batch_id, accepted.accepted)


def _log_draft(position: int, item: LogIn) -> LogRecord:
    level = LogLevel.parse(item.level, f"logs[{position}].level")
    if item.context and len(orjson.dumps(item.context)) > MAX_CONTEXT_BYTES:
        raise ValidationError(
            f"logs[{position}].context", f"at most {MAX_CONTEXT_BYTES} bytes of JSON"
        )
    return LogRecord(
        "", "", item.timestamp, level, item.message, item.service, item.trace_id,
        item.correlation_id, item.context,
    )


def _accepted(batch_id: str, count: int) -> web.Response:
    return web.json_response({"accepted": count, "batch_id": batch_id}, status=202)


def register(app: web.Application) -> None:
    app.router.add_post("/api/ingest/metrics", ingest_metrics)
    app.router.add_post("/api/ingest/logs", ingest_logs)
