"""The logs viewer: query, context, volume, error spikes, patterns."""

from __future__ import annotations

from aiohttp import web

from opspilot.domain.logs import Cursor, LogFilter, LogLevel, LogQuery, VolumeQuery
from opspilot.domain.storable import check_text
from opspilot.domain.timewindow import Bucketing
from opspilot.entrypoints.api.guards import query_project
from opspilot.entrypoints.api.parsing import query_params, window_of
from opspilot.entrypoints.api.responses import json_answer
from opspilot.entrypoints.api.schemas import (
    ContextParams,
    LogQueryParams,
    PatternParams,
    SpikeParams,
    VolumeParams,
)
from opspilot.entrypoints.api.state import services


def _levels(text: str | None) -> tuple[LogLevel, ...]:
    if not text:
        return ()
    return tuple(dict.fromkeys(LogLevel.parse(part) for part in text.split(",") if part.strip()))


def _filter(request: web.Request, project_id: str, params: LogQueryParams) -> LogFilter:
    window = window_of(services(request).clock.now(), params.start_time, params.end_time)
    return LogFilter(
        project_id, window, _levels(params.level), params.service_name,
        params.search.strip() or None if params.search else None, params.trace_id,
    )


async def query_logs(request: web.Request) -> web.Response:
    project_id = await query_project(request)
    params = query_params(request, LogQueryParams)
    cursor = Cursor.decode(params.cursor) if params.cursor else None
    query = LogQuery(_filter(request, project_id, params), params.limit, params.offset, cursor)
    return json_answer(await services(request).logs.search(query))


async def log_context(request: web.Request) -> web.Response:
    project_id = await query_project(request)
    params = query_params(request, ContextParams)
    doc = await services(request).logs.context(
        project_id, check_text(request.match_info["log_id"], "log_id"), params.before,
        params.after, params.scope == "project",
    )
    return json_answer(doc)


async def volume(request: web.Request) -> web.Response:
    project_id = await query_project(request)
    params = query_params(request, VolumeParams)
    window = window_of(services(request).clock.now(), params.start_time, params.end_time)
    query = VolumeQuery(
        project_id, window, Bucketing.parse(params.time_bucket), _levels(params.level),
        params.service_name, params.search.strip() or None if params.search else None,
        params.trace_id,
    )
    return json_answer(await services(request).logs.volume(query))


async def error_spikes(request: web.Request) -> web.Response:
    project_id = await query_project(request)
    params = query_params(request, SpikeParams)
    window = window_of(services(request).clock.now(), params.start_time, params.end_time)
    doc = await services(request).logs.error_spikes(
        project_id, window, Bucketing.parse(params.time_bucket), params.service_name
    )
    return json_answer(doc)


async def patterns(request: web.Request) -> web.Response:
    project_id = await query_project(request)
    params = query_params(request, PatternParams)
    doc = await services(request).logs.patterns(_filter(request, project_id, params), params.limit)
    return json_answer(doc)


def register(app: web.Application) -> None:
    app.router.add_get("/api/logs/query", query_logs)
    app.router.add_get("/api/logs/volume", volume)
    app.router.add_get("/api/logs/error-spikes", error_spikes)
    app.router.add_get("/api/logs/patterns", patterns)
    app.router.add_get("/api/logs/{log_id}/context", log_context)
