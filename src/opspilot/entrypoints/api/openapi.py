"""The OpenAPI 3.1 document, generated from the pydantic models that validate requests and
the TypedDict shapes that the answers are rendered to (application/rendering.py,
responses.py, responses_alerts.py)."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import attrs
from aiohttp import web
from pydantic import BaseModel, TypeAdapter

from opspilot.application import rendering as q
from opspilot.entrypoints.api import responses as r
from opspilot.entrypoints.api import schemas as s
from opspilot.entrypoints.api.prometheus_schemas import PROMETHEUS_ERROR
from opspilot.entrypoints.api.state import mount_prefix


@attrs.frozen
class Operation:
    method: str
    path: str
    summary: str
    # "apiKey"; "bearer" (a user's token and X-Project-ID); "token" (a user's token alone);
    # "admin" (the admin token); "prometheus" (a user's token and X-Project-ID or
    # X-Scope-OrgID; Prometheus' envelope for errors too); None
    auth: str | None
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    success: int = 200
    conflict: str | None = None  # when the operation can answer 409, why
    # the success body's shape, a TypedDict (None: no body, as for 204)
    response: type | None = None
    # The protocol doors (OTLP/HTTP, remote-write) take bodies no pydantic model describes:
    # `media` is their request content as written (media type → schema); `binary` the
    # non-JSON media type their answers may also come in (success and errors alike: OTLP
    # answers in the request's encoding); `headers` their header parameters.
    media: Mapping[str, Any] | None = None
    binary: str | None = None
    headers: tuple[Mapping[str, Any], ...] = ()
    key_as_bearer: bool = False  # the API key is also taken as `Authorization: Bearer`
    form: bool = False  # a POST whose parameters (the `query` model) come as a form body
    # Input rules JSON Schema cannot state (one field against another, against the server's
    # clock or state, or against the caller): said in the operation's description and in
    # `x-rules-beyond-schema`, where the fuzzing reads which operations may refuse
    # schema-valid input (tests/integration/test_api_fuzz_live.py).
    beyond_schema: tuple[str, ...] = ()


OPERATIONS = (
    Operation("post", "/api/ingest/metrics", "Ingest metric points", "apiKey",
              body=s.MetricsIngestBody, success=202, response=r.IngestAccepted,
              beyond_schema=(s.INGEST_TIME_RULE,)),
    Operation("post", "/api/ingest/logs", "Ingest log records", "apiKey",
              body=s.LogsIngestBody, success=202, response=r.IngestAccepted,
              beyond_schema=(s.INGEST_TIME_RULE,)),
    Operation("get", "/api/metrics/query", "Bucketed aggregation of one series", "bearer",
              query=s.MetricQueryParams, response=q.MetricSeries),
    Operation("post", "/api/metrics/query-multiple", "Overlay of several series", "bearer",
              body=s.OverlayBody, response=q.MetricOverlay),
    Operation("get", "/api/metrics/names", "Metric names with points in the window "
              "(default: the last 24 h)", "bearer", query=s.DiscoveryWindow,
              response=q.MetricNames),
    Operation("get", "/api/metrics/services", "Services with points in the window", "bearer",
              query=s.ServiceListParams, response=q.MetricServices),
    Operation("get", "/api/metrics/tags", "Tag keys and values of one metric", "bearer",
              query=s.TagListParams, response=q.MetricTags),
    Operation("get", "/api/me", "The token's user and projects (no X-Project-ID)", "token",
              response=r.Me),
    Operation("get", "/api/metrics/histogram", "Value histogram", "bearer",
              query=s.HistogramParams, response=q.MetricHistogram),
    Operation("get", "/api/metrics/anomalies", "Anomalous buckets of a series", "bearer",
              query=s.AnomalyParams, response=q.MetricAnomalies),
    Operation("get", "/api/logs/query", "Search logs", "bearer", query=s.LogQueryParams,
              response=q.LogPage, beyond_schema=(
                  "cursor: only a next_cursor this server issued, with the same filters",
                  "offset + limit at most 10,000")),
    Operation("get", "/api/logs/{log_id}/context", "Logs around one log", "bearer",
              query=s.ContextParams, response=q.LogContext),
    Operation("get", "/api/logs/volume", "Log counts per bucket", "bearer", query=s.VolumeParams,
              response=q.LogVolume),
    Operation("get", "/api/logs/error-spikes", "Error counts per bucket, spikes flagged",
              "bearer", query=s.SpikeParams, response=q.ErrorSpikes),
    Operation("get", "/api/logs/patterns", "Templates of the matching logs", "bearer",
              query=s.PatternParams, response=q.LogPatterns),
    Operation("get", "/healthz", "Liveness", None, response=r.Health),
    Operation("get", "/readyz", "Readiness of every configured adapter", None,
              response=r.Readiness),
)

PROTOBUF = "application/x-protobuf"
BINARY = {"type": "string", "format": "binary"}


def _otlp_json_request(signal: str, field: str) -> dict[str, Any]:
    return {"type": "object", "description": (
        f"an OTLP JSON Export{signal}ServiceRequest (opentelemetry-proto's JSON encoding:"
        " lowerCamelCase or snake_case field names, int64 as strings or numbers, hex trace"
        " and span ids); unknown fields are ignored, as the OTLP spec asks of receivers"),
        # null is the field's default in protobuf's JSON mapping (no records)
        "properties": {field: {"type": ["array", "null"], "items": {"type": "object"}}}}


def _otlp(path: str, signal: str, field: str, answer: type) -> Operation:
    return Operation(
        "post", path, f"OTLP/HTTP {signal.lower()} export (protobuf or OTLP JSON; gzip)",
        "apiKey", success=200, response=answer, binary=PROTOBUF, key_as_bearer=True,
        media={PROTOBUF: {"schema": {**BINARY, "description": (
            f"a binary protobuf Export{signal}ServiceRequest (opentelemetry-proto)")}},
            "application/json": {"schema": _otlp_json_request(signal, field)}})


PROTOCOL_OPERATIONS = (
    *(_otlp(f"{prefix}/v1/metrics", "Metrics", "resourceMetrics", r.OtlpMetricsAnswer)
      for prefix in ("", "/otlp")),
    *(_otlp(f"{prefix}/v1/logs", "Logs", "resourceLogs", r.OtlpLogsAnswer)
      for prefix in ("", "/otlp")),
    Operation(
        "post", "/api/v1/write", "Prometheus remote-write 1.0", "apiKey", success=204,
        key_as_bearer=True,
        media={PROTOBUF: {"schema": {**BINARY, "description": (
            "a snappy-compressed (block format) protobuf WriteRequest")}}},
        headers=(
            {"name": "Content-Encoding", "in": "header", "required": True,
             "schema": {"type": "string", "enum": ["snappy"]}},
            {"name": "X-Prometheus-Remote-Write-Version", "in": "header", "required": False,
             "schema": {"type": "string", "examples": ["0.1.0"]}},
        )),
)

EXTRA_OPERATIONS: list[Operation] = []  # other route modules append theirs at import

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {
                    "type": "object",
                    "properties": {"field": {"type": "string",
                                             "description": "the input at fault"}},
                },
            },
        }
    },
}


REF_TEMPLATE = "#/components/schemas/{model}"
SCHEMES = {"token": "bearer", "admin": "adminToken"}
ID_SCHEMA = {"type": "string", "minLength": 1, "maxLength": 100}


def _parameters(op: Operation, components: dict[str, Any]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": dict(ID_SCHEMA)}
        for name in _path_names(op.path)
    ]
    if op.auth == "bearer":
        params.append({"name": "X-Project-ID", "in": "header", "required": True,
                       "schema": {"type": "string", "minLength": 1}})
    if op.auth == "prometheus":
        for header in ("X-Project-ID", "X-Scope-OrgID"):
            params.append({"name": header, "in": "header", "required": False,
                           "description": "the project (one of the two is needed; both must "
                                          "agree; an empty one counts as absent)",
                           "schema": {"type": "string"}})
    if op.query is not None and not op.form:
        # Enums and nested models become shared components, as for bodies: a parameter's
        # schema has no `$defs` of its own for a `$ref` to point into.
        schema = op.query.model_json_schema(ref_template=REF_TEMPLATE)
        components.update(schema.get("$defs", {}))
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            params.append({"name": name, "in": "query", "required": name in required,
                           "schema": prop})
    return params


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def _version() -> str:
    try:
        return version("opspilot")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def build_document() -> dict[str, Any]:
    operations = (*OPERATIONS, *PROTOCOL_OPERATIONS, *EXTRA_OPERATIONS)
    bodies = sorted({op.body for op in operations if op.body is not None}, key=lambda m: m.__name__)
    answers = sorted({op.response for op in operations if op.response is not None},
                     key=lambda m: m.__name__)
    # One call for both, so that the enums they share (Aggregation, Severity…) are one
    # component each; a name used by a request and a response model would be a clash.
    clash = {m.__name__ for m in bodies} & {m.__name__ for m in answers}
    if clash:
        raise ValueError(f"models used both as request and response: {sorted(clash)}")
    _, defs = TypeAdapter.json_schemas(
        [*((m, "validation", TypeAdapter(m)) for m in bodies),
         *((m, "serialization", TypeAdapter(m)) for m in answers)],
        ref_template=REF_TEMPLATE,
    )
    components: dict[str, Any] = dict(defs.get("$defs", {}))
    components["Error"] = ERROR_SCHEMA
    components["PrometheusError"] = PROMETHEUS_ERROR
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method] = _operation(op, components)
    return {
        "openapi": "3.1.0",
        "info": {"title": "OpsPilot API", "version": _version()},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKeyBearer": {"type": "http", "scheme": "bearer",
                                 "description": "the project's API key as a bearer token"},
                "adminToken": {"type": "http", "scheme": "bearer",
                               "description": "OPSPILOT_ADMIN_TOKEN"},
            },
        },
    }


def _responses(op: Operation) -> dict[str, Any]:
    """Every status the operation can answer; each error with the standard body."""
    error = _json_content("Error")
    success = _json_content(op.response.__name__) if op.response is not None else {}
    if op.binary:  # OTLP: the request's encoding; a protobuf error is a google.rpc.Status
        error["content"][op.binary] = {"schema": {**BINARY, "description": (
            "a protobuf google.rpc.Status: `code` and `message` (`<field>: <reason>`)")}}
        if success:
            success["content"][op.binary] = {"schema": {**BINARY, "description": (
                "the protobuf Export*ServiceResponse, partial_success when some were refused")}}
    if op.auth == "prometheus":
        return _prometheus_responses(success)
    if op.path == "/readyz":
        return {"200": {"description": "every adapter answers", **success},
                "503": {"description": "some adapter does not answer", **success}}
    responses: dict[str, Any] = {
        str(op.success): {"description": "success", **success},
        "400": {"description": "invalid input", **error},
    }
    if op.auth:
        responses["401"] = {"description": "no or bad credentials", **error}
    if op.auth in ("bearer", "token", "apiKey"):
        responses["403"] = {"description": "not a member of the project, or a role too low",
                            **error}
    if _path_names(op.path):
        responses["404"] = {"description": "no such resource in this project", **error}
    if op.auth == "admin":
        responses["404"] = {"description": "the admin surface is off (no admin token set)",
                            **error}
        responses["415"] = {"description": "not application/json", **error}
    if op.conflict:
        responses["409"] = {"description": op.conflict, **error}
    if op.body is not None or op.media is not None:
        responses["413"] = {"description": "body too large", **error}
    if op.media is not None:
        responses["415"] = {"description": "a Content-Type (or Content-Encoding) the"
                                           " protocol does not have", **error}
    if op.auth:
        responses["429"] = {"description": "rate limited, or the ingest backlog is full; "
                                           "see Retry-After", **error}
    if op.path.startswith("/api/") or op.media is not None:
        responses["503"] = {"description": "a backing service is unavailable; see Retry-After",
                            **error}
    return responses


def _prometheus_responses(success: dict[str, Any]) -> dict[str, Any]:
    """Prometheus' statuses (web/api/v1), each error in its envelope."""
    error = _json_content("PrometheusError")
    return {
        "200": {"description": "success", **success},
        "400": {"description": "bad_data: a parameter or the query (e.g. outside the "
                               "supported subset), named in `error`", **error},
        "401": {"description": "unauthorized: no or bad credentials", **error},
        "403": {"description": "forbidden: not a member of the project", **error},
        "422": {"description": "execution: the query cannot be answered for this data, or "
                               "it reads too many samples or series", **error},
        "429": {"description": "too_many_requests; see Retry-After", **error},
        "503": {"description": "timeout (the query was cancelled), or unavailable: a "
                               "backing service; see Retry-After", **error},
    }


def _form_body(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=REF_TEMPLATE)
    components.update(schema.pop("$defs", {}))
    # a form of only optional parameters may be left out (the server reads no body as none;
    # the live fuzzing found the document saying otherwise)
    return {"required": bool(schema.get("required")),
            "content": {"application/x-www-form-urlencoded": {"schema": schema}}}


def _json_content(component: str) -> dict[str, Any]:
    return {"content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{component}"}}}}


WINDOW_RULE = ("end_time after start_time; the range at most OPSPILOT_MAX_QUERY_RANGE_DAYS "
               "(90 days) and at most OPSPILOT_MAX_BUCKETS (11,000) buckets of time_bucket")


def rules_beyond_schema(op: Operation) -> tuple[str, ...]:
    windowed = (op.query is not None and issubclass(op.query, s.Window)) or (
        op.body is s.OverlayBody)
    return ((WINDOW_RULE,) if windowed else ()) + op.beyond_schema


def _operation(op: Operation, components: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "summary": op.summary,
        "parameters": _parameters(op, components),
        "responses": _responses(op),
    }
    doc["parameters"].extend(dict(header) for header in op.headers)
    rules = rules_beyond_schema(op)
    if rules:
        doc["description"] = "Rules the schema cannot state (refused with 400 naming the " \
                             "field): " + "; ".join(rules) + "."
        doc["x-rules-beyond-schema"] = list(rules)
    if op.auth:
        doc["security"] = [{SCHEMES.get(op.auth, op.auth): []}]
        if op.key_as_bearer:
            doc["security"].append({"apiKeyBearer": []})
    if op.body is not None:
        doc["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{op.body.__name__}"}}}}
    if op.media is not None:
        doc["requestBody"] = {"required": True, "content": {
            kind: dict(content) for kind, content in op.media.items()}}
    if op.form and op.query is not None:
        doc["requestBody"] = _form_body(op.query, components)
    return doc


async def openapi_json(request: web.Request) -> web.Response:
    doc = build_document()
    prefix = mount_prefix(request.app)
    if prefix:  # mounted by a host: the paths below are relative to the prefix
        doc["servers"] = [{"url": prefix}]
    return r.json_answer(doc)


def register(app: web.Application) -> None:
    app.router.add_get("/api/openapi.json", openapi_json)
