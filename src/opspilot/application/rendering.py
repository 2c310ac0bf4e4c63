"""JSON shapes of query answers, built once so that cache hits and misses are identical."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from opspilot.domain.analysis import Anomaly, LogCluster
from opspilot.domain.logs import CountBucket, LogContext, LogPage, LogRecord, SpikeBucket
from opspilot.domain.metrics import Histogram, Series


def to_json(doc: Any) -> bytes:
    """Compact JSON. orjson writes datetimes as RFC 3339 (the same text as `isoformat()`),
    several times faster than the standard library on the 1,440-bucket answers; a non-finite
    float (an overflowing sum) becomes null rather than invalid JSON."""
    return orjson.dumps(doc)


def series_doc(series: Series) -> dict[str, Any]:
    return {
        "metric_name": series.name,
        "service_name": series.service,
        "aggregation": series.aggregation.value,
        "time_bucket": series.bucket,
        "points": [
            {"timestamp": bucket, "value": value, "count": count}
            for bucket, value, count in zip(series.buckets, series.values, series.counts,
                                            strict=True)
        ],
    }


def histogram_doc(histogram: Histogram) -> dict[str, Any]:
    return {
        "metric_name": histogram.name,
        "total": histogram.total,
        "min": histogram.min,
        "max": histogram.max,
        "bins": [{"lower": b.lower, "upper": b.upper, "count": b.count} for b in histogram.bins],
    }


def record_doc(record: LogRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "timestamp": record.timestamp.isoformat(),
        "level": record.level.value,
        "message": record.message,
        "service_name": record.service,
        "trace_id": record.trace_id,
        "correlation_id": record.correlation_id,
        "context": dict(record.context),
    }


def page_doc(page: LogPage, limit: int, offset: int) -> dict[str, Any]:
    return {
        "logs": [record_doc(r) for r in page.records],
        "total": page.total,
        "limit": limit,
        "offset": offset,
        "next_cursor": page.next_cursor.encode() if page.next_cursor else None,
    }


def context_doc(context: LogContext) -> dict[str, Any]:
    return {
        "log": record_doc(context.anchor),
        "before": [record_doc(r) for r in context.before],
        "after": [record_doc(r) for r in context.after],
    }


def volume_doc(buckets: Sequence[CountBucket], bucket: str) -> dict[str, Any]:
    return {
        "time_bucket": bucket,
        "total": sum(b.count for b in buckets),
        "buckets": [{"timestamp": b.bucket.isoformat(), "count": b.count} for b in buckets],
    }


def spikes_doc(buckets: Sequence[SpikeBucket], bucket: str, method: str) -> dict[str, Any]:
    return {
        "time_bucket": bucket,
        "method": method,
        "buckets": [
            {
                "timestamp": b.bucket.isoformat(),
                "count": b.count,
                "baseline": b.baseline,
                "score": round(b.score, 3),
                "spike": b.spike,
            }
            for b in buckets
        ],
        "spikes": sum(1 for b in buckets if b.spike),
    }


def anomaly_doc(anomaly: Anomaly) -> dict[str, Any]:
    return {
        "timestamp": anomaly.timestamp.isoformat(),
        "value": anomaly.value,
        "score": round(anomaly.score, 4),
        "deviation": round(anomaly.deviation, 4),
        "expected": anomaly.expected,
    }


def cluster_doc(cluster: LogCluster) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "pattern": cluster.pattern,
        "count": cluster.count,
        "levels": dict(cluster.levels),
        "samples": list(cluster.samples),
    }
    if cluster.members is not None:
        doc["members"] = list(cluster.members)
    return doc
