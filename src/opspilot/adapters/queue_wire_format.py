"""Wire format of ingest batches on the queue (JSON via orjson), shared by every queue adapter."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from opspilot.domain.ingest import LogBatch, MetricBatch
from opspilot.domain.logs import LogLevel, LogRecord
from opspilot.domain.metrics import MetricMetadata, MetricPoint, MetricType

FORMAT_VERSION = 1


class UndecodableMessage(ValueError):
    """The bytes are not a batch this version understands (dead-letter it)."""


def encode_batch(batch: MetricBatch | LogBatch) -> bytes:
    items: list[Any]
    extra: dict[str, Any] = {}
    if isinstance(batch, MetricBatch):
        items = [_point_row(p) for p in batch.points]
        kind = "metrics"
        if batch.metadata:  # absent otherwise: a message of the earlier shape
            extra["metadata"] = [[m.name, m.type.value, m.help, m.unit] for m in batch.metadata]
    else:
        items = [_record_row(r) for r in batch.records]
        kind = "logs"
    return orjson.dumps({
        "v": FORMAT_VERSION, "kind": kind, "message_id": batch.message_id,
        "project_id": batch.project_id, "received_at": batch.received_at.isoformat(),
        "items": items, **extra,
    })


def decode_batch(body: bytes) -> MetricBatch | LogBatch:
    try:
        doc = orjson.loads(body)
        received = datetime.fromisoformat(doc["received_at"])
        if doc["kind"] == "metrics":
            points = [_point(doc["project_id"], row) for row in doc["items"]]
            metadata = tuple(MetricMetadata(name, MetricType(kind), help_, unit)
                             for name, kind, help_, unit in doc.get("metadata", ()))
            return MetricBatch(doc["message_id"], doc["project_id"], received, points,
                               metadata)
        if doc["kind"] == "logs":
            records = [_record(doc["project_id"], row) for row in doc["items"]]
            return LogBatch(doc["message_id"], doc["project_id"], received, records)
        raise UndecodableMessage(f"unknown kind {doc['kind']!r}")
    except UndecodableMessage:
        raise
    except Exception as exc:  # any shape error in foreign bytes means: dead-letter
        raise UndecodableMessage(f"{type(exc).__name__}: {exc}") from None


def _point_row(p: MetricPoint) -> list[Any]:
    # orjson writes the datetime itself (RFC 3339, offset kept), faster than isoformat().
    return [p.timestamp, p.name, p.value, p.service, dict(p.tags) or None]


def _point(project_id: str, row: list[Any]) -> MetricPoint:
    stamp, name, value, service, tags = row
    return MetricPoint(project_id, datetime.fromisoformat(stamp), name, float(value),
                       service, tags or {})


def _record_row(r: LogRecord) -> dict[str, Any]:
    return {
        "id": r.id, "ts": r.timestamp, "level": r.level.value, "msg": r.message,
        "service": r.service, "trace_id": r.trace_id, "correlation_id": r.correlation_id,
        "context": dict(r.context) or None,
    }


def _record(project_id: str, row: dict[str, Any]) -> LogRecord:
    return LogRecord(
        row["id"], project_id, datetime.fromisoformat(row["ts"]), LogLevel(row["level"]),
        row["msg"], row.get("service"), row.get("trace_id"), row.get("correlation_id"),
        row.get("context") or {},
    )


class DecodedDelivery:
    """The part every queue's delivery shares: its body decoded once, into the batch or
    into the reason it cannot be (the worker dead-letters those)."""

    def __init__(self, body: bytes) -> None:
        try:
            self._batch: MetricBatch | LogBatch | None = decode_batch(body)
            self._error: str | None = None
        except UndecodableMessage as exc:
            self._batch, self._error = None, str(exc)

    @property
    def batch(self) -> MetricBatch | LogBatch | None:
        return self._batch

    @property
    def error(self) -> str | None:
        return self._error
