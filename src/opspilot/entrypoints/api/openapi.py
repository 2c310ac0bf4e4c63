"""The OpenAPI 3.1 document, generated from the same pydantic models that validate requests."""

from __future__ import annotations

from typing import Any

import attrs
from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from opspilot.entrypoints.api import schemas as s


@attrs.frozen
class Operation:
    method: str
    path: str
    summary: str
    auth: str | None  # "apiKey" | "bearer" | None
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    success: int = 200
    conflict: str | None = None  # when the operation can answer 409, why


OPERATIONS = (
    Operation("post", "/api/ingest/metrics", "Ingest metric points", "apiKey",
              body=s.MetricsIngestBody, success=202),
    Operation("post", "/api/ingest/logs", "Ingest log records", "apiKey",
              body=s.LogsIngestBody, success=202),
    Operation("get", "/api/metrics/query", "Bucketed aggregation of one series", "bearer",
              query=s.MetricQueryParams),
    Operation("post", "/api/metrics/query-multiple", "Overlay of several series", "bearer",
              body=s.OverlayBody),
    Operation("get", "/api/metrics/histogram", "Value histogram", "bearer",
              query=s.HistogramParams),
    Operation("get", "/api/metrics/anomalies", "Anomalous buckets of a series", "bearer",
              query=s.AnomalyParams),
    Operation("get", "/api/logs/query", "Search logs", "bearer", query=s.LogQueryParams),
    Operation("get", "/api/logs/{log_id}/context", "Logs around one log", "bearer",
              query=s.ContextParams),
    Operation("get", "/api/logs/volume", "Log counts per bucket", "bearer", query=s.VolumeParams),
    Operation("get", "/api/logs/error-spikes", "Error counts per bucket, spikes flagged",
              "bearer", query=s.SpikeParams),
    Operation("get", "/api/logs/patterns", "Templates of the matching logs", "bearer",
              query=s.PatternParams),
    Operation("post", "/api/admin/projects", "Create a project (loopback callers only)", None,
              body=s.CreateProjectBody, success=201, conflict="a project with this name exists"),
    Operation("get", "/healthz", "Liveness", None),
    Operation("get", "/readyz", "Readiness of every configured adapter", None),
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
ID_SCHEMA = {"type": "string", "minLength": 1, "maxLength": 100}

READINESS_SCHEMA = {
    "type": "object",
    "required": ["status", "checks"],
    "properties": {
        "status": {"enum": ["ready", "unready"]},
        "checks": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def _parameters(op: Operation, components: dict[str, Any]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": dict(ID_SCHEMA)}
        for name in _path_names(op.path)
    ]
    if op.auth == "bearer":
        params.append({"name": "X-Project-ID", "in": "header", "required": True,
                       "schema": {"type": "string", "minLength": 1}})
    if op.query is not None:
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


def build_document() -> dict[str, Any]:
    operations = (*OPERATIONS, *EXTRA_OPERATIONS)
    bodies = sorted({op.body for op in operations if op.body is not None}, key=lambda m: m.__name__)
    _, defs = models_json_schema([(m, "validation") for m in bodies], ref_template=REF_TEMPLATE)
    components: dict[str, Any] = dict(defs.get("$defs", {}))
    components["Error"] = ERROR_SCHEMA
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method] = _operation(op, components)
    return {
        "openapi": "3.1.0",
        "info": {"title": "OpsPilot API", "version": "0.1.0"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }


def _responses(op: Operation) -> dict[str, Any]:
    """Every status the operation can answer; each error with the standard body."""
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    if op.path == "/readyz":
        ready = {"content": {"application/json": {"schema": READINESS_SCHEMA}}}
        return {"200": {"description": "every adapter answers", **ready},
                "503": {"description": "some adapter does not answer", **ready}}
    responses: dict[str, Any] = {
        str(op.success): {"description": "success"},
        "400": {"description": "invalid input", **error},
    }
    if op.auth:
        responses["401"] = {"description": "no or bad credentials", **error}
    if op.auth == "bearer":
        responses["403"] = {"description": "not a member of the project", **error}
    elif op.path.startswith("/api/admin/"):
        responses["403"] = {"description": "not a loopback caller", **error}
    if _path_names(op.path):
        responses["404"] = {"description": "no such resource in this project", **error}
    if op.conflict:
        responses["409"] = {"description": op.conflict, **error}
    if op.body is not None:
        responses["413"] = {"description": "body too large", **error}
    if op.auth:
        responses["429"] = {"description": "rate limited, or the ingest backlog is full; "
                                           "see Retry-After", **error}
    if op.path.startswith("/api/"):
        responses["503"] = {"description": "a backing service is unavailable; see Retry-After",
                            **error}
    return responses


def _operation(op: Operation, components: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "summary": op.summary,
        "parameters": _parameters(op, components),
        "responses": _responses(op),
    }
    if op.auth:
        doc["security"] = [{op.auth: []}]
    if op.body is not None:
        doc["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{op.body.__name__}"}}}}
    return doc


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(build_document())


def register(app: web.Application) -> None:
    app.router.add_get("/api/openapi.json", openapi_json)
