"""The metrics explorer: /api/metrics/query, query-multiple, histogram, anomalies."""

from __future__ import annotations

from aiohttp import web

from opspilot.domain.analysis import AnomalyMethod
from opspilot.domain.errors import ValidationError
from opspilot.domain.metrics import (
    Aggregation,
    AnomalyQuery,
    HistogramQuery,
    MetricQuery,
    SeriesSelector,
)
from opspilot.domain.timewindow import Bucketing, TimeRange
from opspilot.entrypoints.api.guards import query_project
from opspilot.entrypoints.api.parsing import json_body, query_params, window_of
from opspilot.entrypoints.api.responses import json_answer
from opspilot.entrypoints.api.schemas import (
    AnomalyParams,
    DiscoveryWindow,
    HistogramParams,
    MetricQueryParams,
    OverlayBody,
    ServiceListParams,
    TagListParams,
    parse_tags,
)
from opspilot.entrypoints.api.state import services


def _tags(text: str | None) -> dict[str, str]:
    try:
        return parse_tags(text)
    except ValueError as exc:
        raise ValidationError("tags", str(exc)) from None


async def query_metrics(request: web.Request) -> web.Response:
    project_id = await query_project(request)
    params = query_params(request, MetricQueryParams)
    window = window_of(services(request).clock.now(), params.start_time, params.end_time)
    query = MetricQuery(
        project_id,
        SeriesSelector(params.metric_name, params.service_name, _tags(params.tags)),
        window,
        Aggregation.parse(params.aggregation),
        Bucketing.parse(params.time_bucket),
    )
    return json_answer(await services(request).metrics.series(query))


async def query_multiple(request: web.Request) -> web.Response:
    project_id = await query_project(request)
    body = await json_body(request, OverlayBody)
    window = TimeRange.checked(body.start_time, body.end_time)
    bucketing = Bucketing.parse(body.time_bucket)
    queries = [
        MetricQuery(
            project_id,
            SeriesSelector(m.name, m.service, m.tags),
            window,
            Aggregation.parse(m.aggregation or body.aggregation, f"metrics[{i}].aggregation"),
            bucketing,
        )
        for i, m in enumerate(body.metrics)
    ]
    return json_answer(await services(request).metrics.overlay(queries))


async def histogram(request: web.Request) -> web.Response:
    project_id = await query_project(request)
    params = query_params(request, HistogramParams)
    window = window_of(services(request).clock.now(), params.start_time, params.end_time)
    selector = SeriesSelector(params.metric_name, params.service_name, _tags(params.tags))
    query = HistogramQuery(project_id, selector, window, params.bins)
    return json_answer(await services(request).metrics.histogram(query))


async def anomalies(request: web.Request) -> web.Response:
    project_id = await query_project(request)
    params = query_params(request, AnomalyParams)
    window = window_of(services(request).clock.now(), params.start_time, params.end_time, 24)
    selector = SeriesSelector(params.metric_name, params.service_name, _tags(params.tags))
    query = AnomalyQuery(project_id, selector, window, Bucketing.parse(params.time_bucket),
                         params.threshold, AnomalyMethod(params.method))
    return json_answer(await services(request).metrics.anomalies(query))


DISCOVERY_HOURS = 24.0


async def metric_names(request: web.Request) -> web.Response:
    project_id = await query_project(request)
    params = query_params(request, DiscoveryWindow)
    window = window_of(services(request).clock.now(), params.start_time, params.end_time,
                       DISCOVERY_HOURS)
    return json_answer(await services(request).metrics.names(project_id, window, params.limit))


async def metric_services(request: web.Request) -> web.Response:
    project_id = await query_project(request)
    params = query_params(request, ServiceListParams)
    window = window_of(services(request).clock.now(), params.start_time, params.end_time,
                       DISCOVERY_HOURS)
    doc = await services(request).metrics.services(project_id, window, params.metric_name,
                                                   params.limit)
    return json_answer(doc)


async def metric_tags(request: web.Request) -> web.Response:
    project_id = await query_project(request)
    params = query_params(request, TagListParams)
    window = window_of(services(request).clock.now(), params.start_time, params.end_time,
                       DISCOVERY_HOURS)
    doc = await services(request).metrics.tags(project_id, params.metric_name, window,
                                               params.limit)
    return json_answer(doc)


def register(app: web.Application) -> None:
    app.router.add_get("/api/metrics/names", metric_names)
    app.router.add_get("/api/metrics/services", metric_services)
    app.router.add_get("/api/metrics/tags", metric_tags)
    app.router.add_get("/api/metrics/query", query_metrics)
    app.router.add_post("/api/metrics/query-multiple", query_multiple)
    app.router.add_get("/api/metrics/histogram", histogram)
    app.router.add_get("/api/metrics/anomalies", anomalies)
