"""POST /v1/metrics and /v1/logs (also under /otlp): OTLP/HTTP, authenticated by API key.

200 with the Export*ServiceResponse in the request's encoding; `partial_success` counts
and names what was refused while the rest is kept; 400 when nothing could be kept (naming
the first field at fault), 415 for an encoding OTLP/HTTP does not have, 413 past the body
limit, 429/503 with Retry-After when the client should retry (the error middleware).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from aiohttp import web
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from opspilot.application.ingest import TimeCheck
from opspilot.domain.errors import LimitExceeded, OpsPilotError, ValidationError
from opspilot.entrypoints.api.errors import from_domain
from opspilot.entrypoints.api.guards import ingest_identity
from opspilot.entrypoints.api.otlp.body import PROTOBUF, answer, encoding_of, read_export
from opspilot.entrypoints.api.otlp.logs import map_logs
from opspilot.entrypoints.api.otlp.mapped import Mapped
from opspilot.entrypoints.api.otlp.metrics import map_metrics
from opspilot.entrypoints.api.state import services

# Records one request may become (a histogram point is one record per bucket): beyond
# this, the client is told to send smaller exports rather than the queue getting one giant
# message.
MAX_RECORDS = 100_000


@attrs.frozen
class Signal:
    """What differs between the OTLP signals OpsPilot takes."""

    kind: str  # "metrics" or "logs": the use case, the time rules, the telemetry label
    request_type: Any
    response_type: Any
    rejected_field: str  # partial_success's count of refused records
    mapper: Callable[[Any, TimeCheck, str], Mapped]  # (request, time rules, project id)


METRICS = Signal("metrics", ExportMetricsServiceRequest, ExportMetricsServiceResponse,
                 "rejected_data_points", map_metrics)
LOGS = Signal("logs", ExportLogsServiceRequest, ExportLogsServiceResponse,
              "rejected_log_records", lambda request, times, _project: map_logs(request, times))


def exporter(signal: Signal) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def export(request: web.Request) -> web.Response:
        try:
            return await _export(request, signal)
        except OpsPilotError as exc:
            if request.content_type != PROTOBUF:
                raise  # the standard JSON error body (error middleware)
            return as_status(from_domain(exc), exc.message)
        except web.HTTPRequestEntityTooLarge as exc:
            if request.content_type != PROTOBUF:
                raise
            return as_status(exc, f"body: {exc.reason}")

    return export


def as_status(answer: web.Response, message: str) -> web.Response:
    """An error for a protobuf request as the OTLP/HTTP spec requires: the same status and
    headers (Retry-After), the body a protobuf google.rpc.Status whose message names the
    field (`resourceMetrics[0]…: …`), in the request's Content-Type."""
    code = GRPC_CODES.get(answer.status, 2)  # 2: UNKNOWN
    headers = {k: v for k, v in answer.headers.items()
               if k.lower() not in ("content-type", "content-length")}
    return web.Response(status=answer.status, headers=headers, content_type=PROTOBUF,
                        body=Status(code=code, message=message).SerializeToString())


# HTTP status → google.rpc.Code, for the Status body of protobuf errors.
GRPC_CODES = {400: 3, 401: 16, 403: 7, 413: 8, 415: 3, 429: 8, 503: 14}


async def _export(request: web.Request, signal: Signal) -> web.Response:
    identity = await ingest_identity(request, bearer_key=True)
    encoding = encoding_of(request)
    body = await read_export(request, signal.request_type, encoding)
    mapped = signal.mapper(body, services(request).ingest.time_check(signal.kind),
                           identity.project_id)
    await _publish(request, identity, mapped, signal.kind)
    response = signal.response_type()
    if mapped.rejected:
        setattr(response.partial_success, signal.rejected_field, mapped.rejected)
        response.partial_success.error_message = mapped.message()
    return answer(response, encoding)


async def _publish(request: web.Request, identity: Any, mapped: Mapped, kind: str) -> None:
    """Publish what was kept (the same use case as JSON ingest); refuse the request when
    nothing could be kept and something was refused."""
    svc = services(request)
    if len(mapped.records) > MAX_RECORDS:
        raise LimitExceeded("body", f"{len(mapped.records)} {kind} records in one export; at"
                                    f" most {MAX_RECORDS}: send smaller exports")
    if not mapped.records:
        if mapped.rejected:
            field, message = mapped.problems[0]
            raise ValidationError(field, message, rejected=mapped.rejected,
                                  summary=mapped.message())
        return
    if kind == "metrics":
        accepted = await svc.ingest.accept_points(identity, mapped.records, mapped.metadata)
    else:
        accepted = await svc.ingest.accept_logs(identity, mapped.records)
    svc.telemetry.accepted(kind, identity.project_id, accepted.accepted)


def register(app: web.Application) -> None:
    export_metrics, export_logs = exporter(METRICS), exporter(LOGS)
    for prefix in ("", "/otlp"):
        app.router.add_post(f"{prefix}/v1/metrics", export_metrics)
        app.router.add_post(f"{prefix}/v1/logs", export_logs)
