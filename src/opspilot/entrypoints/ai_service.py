"""`opspilot ai`: the Analyzer port over HTTP.

    POST /ai/anomaly  {metric_name, data_points: [{timestamp, value}], method?, threshold?,
                       include_scores?}
                      → {"anomalies": [{timestamp, value, score, deviation, expected}],
                         "method", "threshold", "count", "ongoing", "scores"?}

`threshold` is a score in (0, 1] (default 0.75, see ADR 0012); `method` omitted is the
default detector. Points must be in time order; points sharing a timestamp are averaged
into one observation (one anomaly at most per timestamp). With `"include_scores": true`,
`scores` holds one score per input point, in input order (0 while the detector warms up).
An anomaly is reported once, where it starts; `ongoing` is that anomaly while the last
point is still part of it (its likelihood has not fallen below the threshold since), else
null: the alert engine keeps an anomaly incident open exactly that long.
    POST /ai/cluster  {logs: [{message, level?}], include_members}
                      → {"clusters": [{pattern, count, levels, samples, members?}]}
    GET  /healthz, GET /metrics (Prometheus, its own registry)

Limits: bodies up to 50 MB, 1,000,000 points, 100,000 logs of up to 64 KiB each.
Timestamps are ISO-8601 strings with a zone. Bad input gets a 4xx with the standard body
`{"error": {"code", "message", "details": {"field"}}}` naming the field (the API's error
middleware): malformed JSON and missing or wrong fields 400, too many items 400
(`limit_exceeded`), too large a body 413. Handlers are thin: parse, one analyzer call, render.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import orjson
import pydantic
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    generate_latest,
)
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, Strict

from opspilot.adapters.prometheus.ai import AiTelemetry
from opspilot.domain.analysis import (
    DEFAULT_ANOMALY_THRESHOLD,
    Analyzer,
    Anomaly,
    AnomalyMethod,
    AnomalyReport,
    AnomalyRequest,
    DataPoint,
    LogCluster,
    LogLine,
)
from opspilot.domain.errors import LimitExceeded
from opspilot.entrypoints.api.errors import error_middleware
from opspilot.entrypoints.signals import until_signalled

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 50 * 1024 * 1024
MAX_POINTS = 1_000_000
MAX_LOGS = 100_000
MAX_MESSAGE_CHARS = 65_536
INLINE_BODY_BYTES = 1024 * 1024  # bigger bodies are validated in a worker thread
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


# request bodies ----------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PointIn(_Strict):
    timestamp: Annotated[AwareDatetime, Strict()]  # an ISO-8601 string with a zone, only
    value: Annotated[float, Strict()] = Field(allow_inf_nan=False)


class AnomalyBody(_Strict):
    metric_name: str = Field(min_length=1, max_length=512)
    data_points: list[PointIn] = Field(max_length=MAX_POINTS)
    method: Literal["robust"] = "robust"
    threshold: Annotated[float, Strict()] = Field(default=DEFAULT_ANOMALY_THRESHOLD, gt=0, le=1,
                                                  allow_inf_nan=False)
    include_scores: Annotated[bool, Strict()] = False


class LogIn(_Strict):
    message: str = Field(max_length=MAX_MESSAGE_CHARS)
    level: str | None = Field(default=None, max_length=32)


class ClusterBody(_Strict):
    logs: list[LogIn] = Field(max_length=MAX_LOGS)
    include_members: Annotated[bool, Strict()] = False


@dataclass(frozen=True, slots=True)
class AiLimits:
    max_body_bytes: int = MAX_BODY_BYTES
    max_points: int = MAX_POINTS
    max_logs: int = MAX_LOGS


@functools.cache
def body_models(limits: AiLimits) -> tuple[type[AnomalyBody], type[ClusterBody]]:
    """The request models with `limits` as their list caps (checked in pydantic's core)."""

    class LimitedAnomalyBody(AnomalyBody):
        data_points: list[PointIn] = Field(max_length=limits.max_points)

    class LimitedClusterBody(ClusterBody):
        logs: list[LogIn] = Field(max_length=limits.max_logs)

    return LimitedAnomalyBody, LimitedClusterBody


async def parse(request: web.Request, model: type[M], convert: Callable[[M], T]) -> T:
    """The body as `model`, then `convert`ed to domain values; both in a worker thread for a
    big body (a million points take seconds to validate), so the event loop keeps serving.
    A list over its cap becomes LimitExceeded naming the list."""
    raw = await request.read()  # aiohttp answers 413 past client_max_size
    if len(raw) > INLINE_BODY_BYTES:
        return await asyncio.to_thread(_parse, model, raw, convert)
    return _parse(model, raw, convert)


def _parse(model: type[M], raw: bytes, convert: Callable[[M], T]) -> T:
    try:
        return convert(model.model_validate_json(raw))
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        if first["type"] == "too_long" and len(first["loc"]) == 1:
            raise LimitExceeded(str(first["loc"][0]), first["msg"]) from None
        raise


# handlers --------------------------------------------------------------------------------


async def anomaly(request: web.Request) -> web.Response:
    query = await parse(request, body_models(request.app[LIMITS])[0], anomaly_request)
    report = await request.app[ANALYZER].detect_anomalies(query)
    return _json(report_doc(query, report))


async def cluster(request: web.Request) -> web.Response:
    lines, members = await parse(request, body_models(request.app[LIMITS])[1], log_lines)
    clusters = await request.app[ANALYZER].cluster_logs(lines, members)
    return _json({"clusters": [cluster_doc(c) for c in clusters]})


def anomaly_request(body: AnomalyBody) -> AnomalyRequest:
    points = [DataPoint(p.timestamp, p.value) for p in body.data_points]
    return AnomalyRequest(body.metric_name, points, AnomalyMethod(body.method), body.threshold,
                          body.include_scores)


def log_lines(body: ClusterBody) -> tuple[list[LogLine], bool]:
    return [LogLine(item.message, item.level) for item in body.logs], body.include_members


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    response = web.Response(body=generate_latest(request.app[TELEMETRY].registry))
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


def report_doc(query: AnomalyRequest, report: AnomalyReport) -> dict[str, Any]:
    doc: dict[str, Any] = {"anomalies": [anomaly_doc(a) for a in report.anomalies],
                           "method": query.method.value, "threshold": query.threshold,
                           "count": len(report.anomalies),
                           "ongoing": anomaly_doc(report.ongoing) if report.ongoing else None}
    if report.scores is not None:
        doc["scores"] = report.scores
    return doc


def anomaly_doc(found: Anomaly) -> dict[str, Any]:
    return {"timestamp": found.timestamp.isoformat(), "value": found.value,
            "score": found.score, "deviation": found.deviation, "expected": found.expected}


def cluster_doc(found: LogCluster) -> dict[str, Any]:
    doc: dict[str, Any] = {"pattern": found.pattern, "count": found.count,
                           "levels": found.levels, "samples": list(found.samples)}
    if found.members is not None:
        doc["members"] = list(found.members)
    return doc


def _json(doc: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json")


# telemetry and the app -------------------------------------------------------------------


ANALYZER = web.AppKey("analyzer", Analyzer)
TELEMETRY = web.AppKey("ai_telemetry", AiTelemetry)
LIMITS = web.AppKey("ai_limits", AiLimits)


@web.middleware
async def telemetry_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    response = await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    request.app[TELEMETRY].request_served(request.method, route, response.status,
                                          time.perf_counter() - started)
    return response


def create_ai_app(analyzer: Analyzer, registry: CollectorRegistry | None = None,
                  limits: AiLimits = AiLimits()) -> web.Application:
    """The AI service around `analyzer`; metrics go to `registry` (a new one by default)."""
    # Errors are mapped inside telemetry so that each is counted with its status.
    app = web.Application(middlewares=[telemetry_middleware, error_middleware],
                          client_max_size=limits.max_body_bytes)
    app[ANALYZER] = analyzer
    app[LIMITS] = limits
    app[TELEMETRY] = AiTelemetry(registry)
    app.router.add_post("/ai/anomaly", anomaly)
    app.router.add_post("/ai/cluster", cluster)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def run_ai_service(host: str, port: int) -> None:
    """Serve the in-process analyzer until SIGINT or SIGTERM."""
    from opspilot.adapters.ai.in_process import InProcessAnalyzer

    runner = web.AppRunner(create_ai_app(InProcessAnalyzer()), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("AI service listening on http://%s:%d", host, port)
    print(f"opspilot ai: listening on http://{host}:{port} (/ai/anomaly, /ai/cluster)",
          flush=True)
    try:
        await until_signalled()
    finally:
        await runner.cleanup()


