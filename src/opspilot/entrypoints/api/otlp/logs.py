"""OTLP logs → log lines (docs/otlp.md has the table).

Resource `service.name` → service; severity number (else text) → level; a string body →
message (a structured body → its JSON as message, itself as context `body`); record
attributes → context keys, resource attributes → context `resource`, scope → context
`scope`; trace id (hex) → trace_id, so "logs by trace id" finds OTel-instrumented
services' lines; span id (hex) → context `span_id`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from opspilot.application.ingest import MAX_AHEAD, MAX_CONTEXT_BYTES, TimeCheck
from opspilot.domain.logs import LEVEL_ALIASES, MAX_MESSAGE_LENGTH, LogLevel
from opspilot.entrypoints.api.otlp.mapped import LogIn, Mapped
from opspilot.entrypoints.api.otlp.values import (
    EPOCH,
    Refused,
    as_datetime,
    check_json,
    check_text,
    json_value,
    service_of,
)

MAX_CONTEXT_KEYS = 64  # as JSON ingest's `context`

# SeverityNumber ranges (logs data model): 1-4 TRACE, 5-8 DEBUG, 9-12 INFO, 13-16 WARN,
# 17-20 ERROR, 21-24 FATAL. OpsPilot has no TRACE: it is kept as DEBUG.
_BY_NUMBER = ["INFO"] + ["DEBUG"] * 8 + ["INFO"] * 4 + ["WARN"] * 4 + ["ERROR"] * 4 + ["FATAL"] * 4
_BY_TEXT = {level.value: level.value for level in LogLevel} | LEVEL_ALIASES | {"TRACE": "DEBUG"}


def level_of(number: int, text: str) -> str:
    """The severity number when set (1-24), else the text when it names a level, else INFO."""
    if 0 < number < len(_BY_NUMBER):
        return _BY_NUMBER[number]
    return _BY_TEXT.get(text.strip().upper(), "INFO") if text else "INFO"


def map_logs(request: Any, times: TimeCheck) -> Mapped:
    """Every log record of an ExportLogsServiceRequest, mapped or refused."""
    mapped = Mapped()
    records = mapped.records
    latest = times.now + MAX_AHEAD
    oldest = times.now - times.keep if times.keep is not None else EPOCH
    for ri, resource_logs in enumerate(request.resource_logs):
        where = f"resourceLogs[{ri}]"
        try:
            service = service_of(resource_logs.resource.attributes)
        except Refused as refused:
            mapped.refuse(f"{where}.{refused.field}", refused.message,
                          sum(len(s.log_records) for s in resource_logs.scope_logs))
            continue
        resource = {kv.key: json_value(kv.value) for kv in resource_logs.resource.attributes
                    if kv.key != "service.name"}
        for si, scope_logs in enumerate(resource_logs.scope_logs):
            scope = _scope(scope_logs.scope)
            for li, record in enumerate(scope_logs.log_records):
                try:
                    nanos = record.time_unix_nano or record.observed_time_unix_nano
                    moment = as_datetime(nanos) if nanos else times.now
                    if moment > latest or moment < oldest:
                        raise Refused("timeUnixNano", times.problem(moment) or "out of range")
                    records.append(_record(record, moment, service, resource, scope))
                except Refused as refused:
                    mapped.refuse(f"{where}.scopeLogs[{si}].logRecords[{li}].{refused.field}",
                                  refused.message)
    return mapped


def _scope(scope: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if scope.name:
        found["name"] = scope.name
    if scope.version:
        found["version"] = scope.version
    if scope.attributes:
        found["attributes"] = {kv.key: json_value(kv.value) for kv in scope.attributes}
    return found


def _record(record: Any, moment: datetime, service: str | None, resource: dict[str, Any],
            scope: dict[str, Any]) -> LogIn:
    attributes = record.attributes
    context: dict[str, Any] = {kv.key: json_value(kv.value) for kv in attributes} if attributes else {}
    body = record.body
    if body.HasField("string_value"):
        message = body.string_value
    elif body.WhichOneof("value") is None:
        message = record.event_name
    else:
        context["body"] = json_value(body)
        message = orjson.dumps(context["body"]).decode()
    if len(message) > MAX_MESSAGE_LENGTH:
        raise Refused("body", f"at most {MAX_MESSAGE_LENGTH} characters")
    check_text(message, "body")
    if resource:
        context["resource"] = resource
    if scope:
        context["scope"] = scope
    raw_span = record.span_id
    if raw_span:
        span_id = _hex_id(raw_span, 8, "spanId")
        if span_id:
            context["span_id"] = span_id
    if context:
        check_json(context, "attributes")
        if len(context) > MAX_CONTEXT_KEYS:
            raise Refused("attributes", f"at most {MAX_CONTEXT_KEYS} keys, with the resource,"
                                        f" scope, body and span_id OpsPilot adds ({len(context)})")
        encoded = orjson.dumps(context)
        if len(encoded) > MAX_CONTEXT_BYTES:
            raise Refused("attributes", f"at most {MAX_CONTEXT_BYTES} bytes of JSON with the"
                                        f" resource and scope ({len(encoded)})")
    raw_trace = record.trace_id
    trace_id = _hex_id(raw_trace, 16, "traceId") if raw_trace else None
    number = record.severity_number
    level = _BY_NUMBER[number] if 0 < number < 25 else level_of(number, record.severity_text)
    return LogIn(level, message, moment, service, trace_id, None, context)


def _hex_id(raw: bytes, size: int, field: str) -> str | None:
    if len(raw) != size:
        raise Refused(field, f"{size} bytes ({2 * size} hex digits), not {len(raw)}")
    return None if not any(raw) else raw.hex()
