"""OTLP/HTTP bodies: binary protobuf or the OTLP JSON encoding, in and out.

The request's encoding is also the response's (the spec requires it). gzip bodies are
inflated by `api.body.read_body` (after authentication, capped at the body limit: 413).
OTLP JSON differs from protobuf's canonical JSON in one way json_format does not know:
trace and span ids are hex, not base64; they are converted before parsing.
"""

from __future__ import annotations

import base64
from typing import Any, TypeVar

import orjson
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from opspilot.domain.errors import UnsupportedMediaType, ValidationError
from opspilot.entrypoints.api.body import read_body

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

M = TypeVar("M", bound=Message)


def encoding_of(request: web.Request) -> str:
    kind = request.content_type  # without parameters such as charset
    if kind not in (PROTOBUF, JSON):
        raise UnsupportedMediaType(
            f"Content-Type: {kind or 'none'}: OTLP/HTTP takes {PROTOBUF} or {JSON}",
            {"field": "Content-Type"})
    return kind


async def read_export(request: web.Request, message_type: type[M], encoding: str) -> M:
    raw = await read_body(request)
    message: M = message_type()
    if encoding == PROTOBUF:
        try:
            message.ParseFromString(raw)
        except (DecodeError, RecursionError) as exc:
            raise ValidationError("body", f"not a protobuf {message_type.__name__}: {exc}") from None
        return message
    try:
        doc = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError as exc:
        raise ValidationError("body", f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValidationError("body", f"an OTLP JSON {message_type.__name__} object is required")
    _objects_only(doc)
    _hex_ids_to_base64(doc)
    try:
        json_format.ParseDict(doc, message, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError) as exc:
        raise ValidationError("body", f"not an OTLP JSON {message_type.__name__}: {exc}") from None
    return message


def answer(message: Message, encoding: str) -> web.Response:
    if encoding == PROTOBUF:
        return web.Response(body=message.SerializeToString(), content_type=PROTOBUF)
    # compact, as every JSON answer of the API (orjson); the names and int64-as-string
    # of protobuf's JSON mapping, as OTLP JSON clients read them
    return web.Response(body=orjson.dumps(json_format.MessageToDict(message)),
                        content_type=JSON)


_RESOURCE_KEYS = ("resourceMetrics", "resource_metrics", "resourceLogs", "resource_logs")


def _objects_only(doc: dict[str, Any]) -> None:
    """json_format, told to ignore unknown fields, reads a string or number where a
    ResourceMetrics/ResourceLogs object belongs as an empty message: the request would be
    answered 200 with nothing stored (found by the live fuzzing). Such an item is a 400."""
    for key in _RESOURCE_KEYS:
        items = doc.get(key)
        if not isinstance(items, list):
            continue
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise ValidationError(f"{key}[{index}]", "an object is required")


# Where OTLP JSON carries ids: log records, and the exemplars of every kind of data point.
_ID_KEYS = ("traceId", "spanId", "trace_id", "span_id")
_DATA_KINDS = ("gauge", "sum", "histogram", "exponentialHistogram", "summary",
               "exponential_histogram")


def _hex_ids_to_base64(doc: dict[str, Any]) -> None:
    for path, holder in _id_holders(doc):
        for key in _ID_KEYS:
            value = holder.get(key)
            if isinstance(value, str) and value:
                try:
                    holder[key] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError:
                    raise ValidationError(f"{path}.{key}", "hex digits expected") from None


def _id_holders(doc: dict[str, Any]) -> Any:
    for ri, resource in enumerate(_list(doc, "resourceLogs", "resource_logs")):
        for si, scope in enumerate(_list(resource, "scopeLogs", "scope_logs")):
            for li, record in enumerate(_list(scope, "logRecords", "log_records")):
                yield f"resourceLogs[{ri}].scopeLogs[{si}].logRecords[{li}]", record
    for ri, resource in enumerate(_list(doc, "resourceMetrics", "resource_metrics")):
        for si, scope in enumerate(_list(resource, "scopeMetrics", "scope_metrics")):
            for mi, metric in enumerate(_list(scope, "metrics")):
                for kind in _DATA_KINDS:
                    data = metric.get(kind) if isinstance(metric, dict) else None
                    for di, point in enumerate(_list(data, "dataPoints", "data_points")):
                        for ei, exemplar in enumerate(_list(point, "exemplars")):
                            yield (f"resourceMetrics[{ri}].scopeMetrics[{si}].metrics[{mi}]."
                                   f"{kind}.dataPoints[{di}].exemplars[{ei}]"), exemplar


def _list(holder: Any, *keys: str) -> list[Any]:
    """The dicts of a JSON array field (json_format reports anything else that is wrong)."""
    if not isinstance(holder, dict):
        return []
    for key in keys:
        found = holder.get(key)
        if isinstance(found, list):
            return [item for item in found if isinstance(item, dict)]
    return []
