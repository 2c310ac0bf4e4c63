"""The Prometheus HTTP query API (/api/v1/...), GET or form POST as Prometheus accepts them.

These routes speak Prometheus' envelope, success and error alike, so that Grafana and other
Prometheus clients read them: `{"status": "success", "data": …}` or `{"status": "error",
"errorType": "bad_data", "error": "…", "details": {"field": …}}` (`details` is OpsPilot's
addition; Prometheus clients ignore it). Tenancy as everywhere: a bearer token whose user is
a member of the project named by X-Project-ID, or by X-Scope-OrgID as Mimir clients send it.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import attrs
import orjson
from aiohttp import web
from multidict import MultiDict, MultiDictProxy
from pydantic import BaseModel

from opspilot.application.promql.queries import PrometheusQueries, QueryOptions
from opspilot.domain import errors
from opspilot.domain.labels import millis
from opspilot.domain.storable import check_text
from opspilot.entrypoints.api import openapi, prometheus_schemas
from opspilot.entrypoints.api.guards import query_project
from opspilot.entrypoints.api.state import services

log = logging.getLogger(__name__)

PROJECT_HEADERS = ("X-Project-ID", "X-Scope-OrgID")
# What /api/v1/status/buildinfo reports: the Prometheus release whose PromQL semantics the
# differential test checks (tests/integration/test_promql_differential.py).
PROMETHEUS_COMPATIBLE = "2.42.0"
DEFAULT_SPAN_MS = 90 * 86_400_000  # series/labels without start: the default retention
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_DURATION_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
                   "w": 604_800_000, "y": 31_536_000_000}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")

ERROR_TYPES: list[tuple[type[errors.OpsPilotError], int, str]] = [
    (errors.LimitExceeded, 422, "execution"),
    (errors.ValidationError, 400, "bad_data"),
    (errors.QueryExecutionError, 422, "execution"),
    (errors.QueryTimeout, 503, "timeout"),
    (errors.Unauthenticated, 401, "unauthorized"),
    (errors.Forbidden, 403, "forbidden"),
    (errors.RateLimited, 429, "too_many_requests"),
    (errors.ServiceUnavailable, 503, "unavailable"),
]

Handler = Callable[[web.Request, MultiDict[str], str], Awaitable[Any]]


def envelope(status: int, body: dict[str, Any], headers: dict[str, str] | None = None
             ) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json",
                        headers=headers)


def error_envelope(exc: errors.OpsPilotError) -> web.Response:
    status, kind = 500, "internal"
    for error_type, code, name in ERROR_TYPES:
        if isinstance(exc, error_type):
            status, kind = code, name
            break
    headers = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    body = {"status": "error", "errorType": kind, "error": exc.message, "details": exc.details}
    return envelope(status, body, headers)


def prometheus_route(handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Parameters from the URL and (POST) the form, the project, then the handler's data in
    the success envelope; OpsPilot's errors in Prometheus' error envelope."""

    async def route(request: web.Request) -> web.Response:
        try:
            params = await _params(request)
            project_id = await query_project(request, PROJECT_HEADERS)
            data = await handler(request, params, project_id)
        except errors.OpsPilotError as exc:
            return error_envelope(exc)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            body = {"status": "error", "errorType": "internal",
                    "error": "internal error; it has been logged"}
            return envelope(500, body)
        return envelope(200, {"status": "success", "data": data})

    return route


async def _params(request: web.Request) -> MultiDict[str]:
    params: MultiDict[str] = MultiDict()
    if request.method == "POST" and request.can_read_body:
        content_type = request.content_type
        if content_type not in ("application/x-www-form-urlencoded", "multipart/form-data", ""):
            raise errors.ValidationError("Content-Type",
                                         "expected application/x-www-form-urlencoded")
        try:
            form: MultiDictProxy[Any] = await request.post()
        except ValueError as exc:  # e.g. multipart/form-data without a boundary
            raise errors.ValidationError("Content-Type", f"unreadable form: {exc}") from None
        params.extend((k, v) for k, v in form.items() if isinstance(v, str))
    params.extend(request.query.items())
    return params


# -- parameters --------------------------------------------------------------------------------


def parse_time(text: str, field: str) -> int:
    """Unix seconds (with a fraction) or RFC 3339, as Prometheus accepts them → milliseconds."""
    text = text.strip()
    if _NUMBER.match(text):
        seconds = float(text)
        if not math.isfinite(seconds) or abs(seconds) > 1e13:
            raise errors.ValidationError(field, f"cannot parse {text!r} to a valid timestamp")
        whole = math.trunc(seconds)
        return whole * 1000 + _go_round((seconds - whole) * 1000)
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise errors.ValidationError(field, f"cannot parse {text!r} to a valid timestamp") from None
    if value.tzinfo is None:
        raise errors.ValidationError(field, "an RFC 3339 timestamp needs a zone")
    return millis(value)


def _go_round(value: float) -> int:
    """Go's math.Round: halves away from zero (Python's round() takes them to even)."""
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def parse_step(text: str, field: str = "step") -> int:
    """Seconds (with a fraction) or a Prometheus duration such as 30s or 1m30s."""
    text = text.strip()
    if _NUMBER.match(text):
        seconds = float(text)
        if not math.isfinite(seconds) or seconds > 1e10:
            raise errors.ValidationError(field, f"cannot parse {text!r} to a valid duration")
        return round(seconds * 1e9) // 1_000_000
    pieces = _DURATION.findall(text)
    if not pieces or "".join(n + u for n, u in pieces) != text:
        raise errors.ValidationError(field, f"cannot parse {text!r} to a valid duration")
    return sum(int(n) * _DURATION_UNITS[u] for n, u in pieces)


def _required(params: MultiDict[str], name: str) -> str:
    value = params.get(name)
    if value is None or value == "":
        raise errors.ValidationError(name, f"parameter {name!r} is required")
    return value


def _time(params: MultiDict[str], name: str, default: int) -> int:
    text = params.get(name)
    return default if text is None or text == "" else parse_time(text, name)


def _now_ms(request: web.Request) -> int:
    return millis(services(request).clock.now())


def _span(request: web.Request, params: MultiDict[str]) -> tuple[int, int]:
    end = _time(params, "end", _now_ms(request))
    return _time(params, "start", end - DEFAULT_SPAN_MS), end


def _queries(request: web.Request) -> PrometheusQueries:
    return services(request).prometheus


# -- handlers ----------------------------------------------------------------------------------


def query_options(params: MultiDict[str]) -> QueryOptions:
    """`lookback_delta` and `timeout` (durations as Prometheus parses them: seconds or 1m30s)
    and `stats`, as Prometheus 2.42's API reads them (extractQueryOpts, parseDuration)."""
    lookback = params.get("lookback_delta") or ""
    timeout = params.get("timeout") or ""
    options = QueryOptions(stats=params.get("stats") or None)
    if lookback:
        lookback_ms = parse_step(lookback, "lookback_delta")
        if lookback_ms > 0:  # Prometheus: zero keeps the default
            options = attrs.evolve(options, lookback_ms=lookback_ms)
    if timeout:  # as context.WithTimeout: zero or less has already run out
        options = attrs.evolve(options, timeout_s=max(0, parse_step(timeout, "timeout")) / 1000)
    return options


async def instant_query(request: web.Request, params: MultiDict[str], project_id: str) -> Any:
    at = _time(params, "time", _now_ms(request))
    return await _queries(request).instant(project_id, _required(params, "query"), at,
                                           query_options(params))


async def range_query(request: web.Request, params: MultiDict[str], project_id: str) -> Any:
    start = parse_time(_required(params, "start"), "start")
    end = parse_time(_required(params, "end"), "end")
    step = parse_step(_required(params, "step"))
    return await _queries(request).range(project_id, _required(params, "query"), start, end, step,
                                         query_options(params))


async def series(request: web.Request, params: MultiDict[str], project_id: str) -> Any:
    start, end = _span(request, params)
    return await _queries(request).series(project_id, params.getall("match[]", []), start, end)


async def label_names(request: web.Request, params: MultiDict[str], project_id: str) -> Any:
    start, end = _span(request, params)
    return await _queries(request).label_names(project_id, params.getall("match[]", []),
                                               start, end)


async def label_values(request: web.Request, params: MultiDict[str], project_id: str) -> Any:
    start, end = _span(request, params)
    name = check_text(request.match_info["name"], "name")
    return await _queries(request).label_values(project_id, name, params.getall("match[]", []),
                                                start, end)


async def metadata(request: web.Request, params: MultiDict[str], project_id: str) -> Any:
    start, end = _span(request, params)
    found = await _queries(request).metadata(project_id, params.get("metric") or None, start, end)
    limit = params.get("limit")
    if limit:
        try:
            count = int(limit)
        except ValueError:
            raise errors.ValidationError("limit", "must be an integer") from None
        if count >= 0:
            found = dict(list(found.items())[:count])
    return found


async def buildinfo(request: web.Request, params: MultiDict[str], project_id: str) -> Any:
    return {"version": PROMETHEUS_COMPATIBLE, "revision": "opspilot", "branch": "opspilot",
            "buildUser": "", "buildDate": "", "goVersion": "", "application": "opspilot"}


ROUTES: list[tuple[str, Handler, bool]] = [  # path, handler, also POST
    ("/api/v1/query", instant_query, True),
    ("/api/v1/query_range", range_query, True),
    ("/api/v1/series", series, True),
    ("/api/v1/labels", label_names, True),
    ("/api/v1/label/{name}/values", label_values, False),
    ("/api/v1/metadata", metadata, False),
    ("/api/v1/status/buildinfo", buildinfo, False),
]


def _operations() -> list[openapi.Operation]:
    """The routes in the OpenAPI document: GET with query parameters, POST with the same
    parameters as a form."""
    ps = prometheus_schemas
    described: dict[str, tuple[str, type[BaseModel] | None, type[BaseModel]]] = {
        "/api/v1/query": ("Prometheus instant query", ps.PromInstantParams,
                          ps.PromQueryAnswer),
        "/api/v1/query_range": ("Prometheus range query", ps.PromRangeParams,
                                ps.PromQueryAnswer),
        "/api/v1/series": ("Prometheus series matching selectors", ps.PromSeriesParams,
                           ps.PromSeriesAnswer),
        "/api/v1/labels": ("Prometheus label names", ps.PromLabelsParams, ps.PromLabelsAnswer),
        "/api/v1/label/{name}/values": ("Prometheus values of one label", ps.PromLabelsParams,
                                        ps.PromLabelsAnswer),
        "/api/v1/metadata": ("Prometheus metric metadata (type, help, unit)",
                             ps.PromMetadataParams, ps.PromMetadataAnswer),
        "/api/v1/status/buildinfo": ("The Prometheus version whose API OpsPilot answers",
                                     None, ps.PromBuildInfoAnswer),
    }
    ops = []
    for path, _, post in ROUTES:
        summary, params, answer = described[path]
        rules = (_PROJECT_RULE, *_RULES) if params is not None else (_PROJECT_RULE,)
        ops.append(openapi.Operation("get", path, summary, "prometheus", query=params,
                                     response=answer, beyond_schema=rules))
        if post:
            ops.append(openapi.Operation("post", path, summary, "prometheus", query=params,
                                         response=answer, form=True, beyond_schema=rules))
    return ops


_PROJECT_RULE = "X-Project-ID and X-Scope-OrgID, when both are sent, name the same project"
# What the parameters' text must say, which their schemas (strings, as Prometheus takes
# them) do not state; schema-valid text may be a 400 bad_data.
_RULES = (
    "query and match[]: PromQL of the supported subset (docs/prometheus.md)",
    "time, start, end: RFC 3339 or Unix seconds, end not before start; step: a duration or "
    "seconds, at most 11,000 points; limit: an integer",
)


if not any(op.path == "/api/v1/query" for op in openapi.EXTRA_OPERATIONS):
    openapi.EXTRA_OPERATIONS.extend(_operations())


def register(app: web.Application) -> None:
    for path, handler, post in ROUTES:
        route = prometheus_route(handler)
        app.router.add_get(path, route)
        if post:
            app.router.add_post(path, route)
