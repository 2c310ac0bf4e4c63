"""JSON shapes of query answers, built once so that cache hits and misses are identical.

Each answer is declared once, here: a closed TypedDict (the shape, which the OpenAPI
document is generated from, entrypoints/api/openapi.py) beside the function that renders it
from the domain objects. The renderers build plain dicts (no model is built per answer: a
series may have 11,000 buckets) and mypy holds each dict literal to its TypedDict, so a
field added to one and not the other fails the type check; the unit tests hold the served
answers to the generated schema (tests/unit/api/test_response_schemas.py).

Serialisation facts the shapes follow: datetimes and enums go to orjson as they are and come
out as RFC 3339 text (always with an offset) and the enum's value; a non-finite float (an
overflowing sum) becomes `null`, so aggregated numbers are nullable.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, NotRequired, TypeVar

import orjson
from pydantic import ConfigDict, Field, with_config
from typing_extensions import TypedDict

from opspilot.domain import logs
from opspilot.domain.analysis import Anomaly, AnomalyMethod, LogCluster
from opspilot.domain.logs import CountBucket, LogLevel, LogRecord
from opspilot.domain.metrics import Aggregation, AnomalyQuery, Histogram, Series

Shape = TypeVar("Shape", bound=type)
Instant = datetime  # {"type": "string", "format": "date-time"}
# A float that an overflow may have made non-finite, which the encoder writes as null.
Aggregate = float | None


def closed(shape: Shape) -> Shape:
    """A shape whose schema admits no other field (`additionalProperties: false`): each one
    is a fixed dict literal, so a field that appears without being declared is a mistake.
    Free-form maps (tags, a log's context, readiness checks) are typed as dicts instead."""
    return with_config(ConfigDict(extra="forbid"))(shape)


def to_json(doc: Any) -> bytes:
    """Compact JSON. orjson writes datetimes as RFC 3339 (the same text as `isoformat()`),
    several times faster than the standard library on the 1,440-bucket answers; a non-finite
    float (an overflowing sum) becomes null rather than invalid JSON."""
    return orjson.dumps(doc)


# -- metrics -------------------------------------------------------------------------------


@closed
class SeriesPoint(TypedDict):
    timestamp: Annotated[Instant, Field(description="start of the bucket")]
    value: Annotated[Aggregate, Field(description="the aggregate; null if it overflowed")]
    count: Annotated[int, Field(description="points in the bucket")]


@closed
class MetricSeries(TypedDict):
    """One bucketed series; buckets without points are left out (ascending time)."""

    metric_name: str
    service_name: str | None
    aggregation: Aggregation
    time_bucket: Annotated[str, Field(description="the bucket width, e.g. 1m")]
    points: list[SeriesPoint]


def series_doc(series: Series) -> MetricSeries:
    return {
        "metric_name": series.name,
        "service_name": series.service,
        "aggregation": series.aggregation,
        "time_bucket": series.bucket,
        "points": [
            {"timestamp": bucket, "value": value, "count": count}
            for bucket, value, count in zip(series.buckets, series.values, series.counts,
                                            strict=True)
        ],
    }


@closed
class MetricOverlay(TypedDict):
    series: Annotated[list[MetricSeries], Field(description="one per requested metric, in order")]


def overlay_doc(series: Sequence[Series]) -> MetricOverlay:
    return {"series": [series_doc(s) for s in series]}


# Discovery: each answer says whether the limit cut it short (the store is asked for one
# more than the limit, so `found` may hold limit + 1).


@closed
class MetricNames(TypedDict):
    names: Annotated[list[str], Field(description="metrics with a point in the window, "
                                                  "ascending")]
    truncated: Annotated[bool, Field(description="true when `limit` cut the list short")]


def names_doc(found: Sequence[str], limit: int) -> MetricNames:
    return {"names": list(found[:limit]), "truncated": len(found) > limit}


@closed
class MetricServices(TypedDict):
    metric_name: Annotated[str | None, Field(description="the metric asked about, or null "
                                                         "for all")]
    services: Annotated[list[str], Field(description="ascending")]
    truncated: bool


def services_doc(metric_name: str | None, found: Sequence[str], limit: int) -> MetricServices:
    return {"metric_name": metric_name, "services": list(found[:limit]),
            "truncated": len(found) > limit}


@closed
class TagValues(TypedDict):
    key: str
    values: Annotated[list[str], Field(description="ascending")]


@closed
class MetricTags(TypedDict):
    metric_name: str
    tags: Annotated[list[TagValues], Field(description="by key, ascending")]
    truncated: Annotated[bool, Field(description="true when `limit` cut keys or values short")]


def tags_doc(metric_name: str, found: dict[str, list[str]], limit: int) -> MetricTags:
    keys = list(found)[:limit]
    return {
        "metric_name": metric_name,
        "tags": [{"key": k, "values": found[k][:limit]} for k in keys],
        "truncated": len(found) > limit or any(len(found[k]) > limit for k in keys),
    }


@closed
class HistogramBin(TypedDict):
    lower: float
    upper: float
    count: int


@closed
class MetricHistogram(TypedDict):
    metric_name: str
    total: Annotated[int, Field(description="points in the window")]
    min: Annotated[float | None, Field(description="null when there are no points")]
    max: Annotated[float | None, Field(description="null when there are no points")]
    bins: Annotated[list[HistogramBin], Field(description="empty when there are no points")]


def histogram_doc(histogram: Histogram) -> MetricHistogram:
    return {
        "metric_name": histogram.name,
        "total": histogram.total,
        "min": histogram.min,
        "max": histogram.max,
        "bins": [{"lower": b.lower, "upper": b.upper, "count": b.count} for b in histogram.bins],
    }


@closed
class AnomalyPoint(TypedDict):
    timestamp: Instant
    value: Annotated[float, Field(description="the bucket's average")]
    score: Annotated[float, Field(ge=0, le=1, description="calibrated anomaly score, at least "
                                                          "the threshold (ADR 0012)")]
    deviation: Annotated[float, Field(description="signed, in long-run error scales from the "
                                                  "expected value")]
    expected: Annotated[float | None, Field(description="null where the detector has too "
                                                        "little history")]


def anomaly_doc(anomaly: Anomaly) -> AnomalyPoint:
    return {
        "timestamp": anomaly.timestamp,
        "value": anomaly.value,
        "score": round(anomaly.score, 4),
        "deviation": round(anomaly.deviation, 4),
        "expected": anomaly.expected,
    }


@closed
class MetricAnomalies(TypedDict):
    metric_name: str
    service_name: str | None
    method: AnomalyMethod
    threshold: float
    time_bucket: str
    points: Annotated[int, Field(description="buckets analysed")]
    anomalies: list[AnomalyPoint]


def anomalies_doc(query: AnomalyQuery, points: int, found: Sequence[Anomaly]) -> MetricAnomalies:
    return {
        "metric_name": query.series.name,
        "service_name": query.series.service,
        "method": query.method,
        "threshold": query.threshold,
        "time_bucket": query.bucketing.label,
        "points": points,
        "anomalies": [anomaly_doc(a) for a in found],
    }


# -- logs ----------------------------------------------------------------------------------


@closed
class LogEntry(TypedDict):
    id: str
    timestamp: Instant
    level: LogLevel
    message: str
    service_name: str | None
    trace_id: str | None
    correlation_id: str | None
    context: dict[str, Any]


def record_doc(record: LogRecord) -> LogEntry:
    return {
        "id": record.id,
        "timestamp": record.timestamp,
        "level": record.level,
        "message": record.message,
        "service_name": record.service,
        "trace_id": record.trace_id,
        "correlation_id": record.correlation_id,
        "context": dict(record.context),
    }


@closed
class LogPage(TypedDict):
    logs: Annotated[list[LogEntry], Field(description="newest first")]
    total: Annotated[int, Field(description="matches in all (capped by the store's exact-count "
                                            "limit)")]
    limit: int
    offset: int
    next_cursor: Annotated[str | None, Field(description="pass as `cursor` for the next page; "
                                                         "null on the last page")]


def page_doc(page: logs.LogPage, limit: int, offset: int) -> LogPage:
    return {
        "logs": [record_doc(r) for r in page.records],
        "total": page.total,
        "limit": limit,
        "offset": offset,
        "next_cursor": page.next_cursor.encode() if page.next_cursor else None,
    }


@closed
class LogContext(TypedDict):
    log: LogEntry
    before: Annotated[list[LogEntry], Field(description="oldest first")]
    after: Annotated[list[LogEntry], Field(description="oldest first")]


def context_doc(context: logs.LogContext) -> LogContext:
    return {
        "log": record_doc(context.anchor),
        "before": [record_doc(r) for r in context.before],
        "after": [record_doc(r) for r in context.after],
    }


@closed
class VolumeBucket(TypedDict):
    timestamp: Instant
    count: int


@closed
class LogVolume(TypedDict):
    time_bucket: str
    total: int
    buckets: list[VolumeBucket]


def volume_doc(buckets: Sequence[CountBucket], bucket: str) -> LogVolume:
    return {
        "time_bucket": bucket,
        "total": sum(b.count for b in buckets),
        "buckets": [{"timestamp": b.bucket, "count": b.count} for b in buckets],
    }


@closed
class SpikeBucket(TypedDict):
    timestamp: Instant
    count: int
    baseline: Annotated[float, Field(description="median count of the previous buckets")]
    score: Annotated[float, Field(description="robust score, rounded to 3 decimals")]
    spike: bool


@closed
class ErrorSpikes(TypedDict):
    time_bucket: str
    method: Annotated[str, Field(description="how a bucket is judged a spike, in words")]
    buckets: list[SpikeBucket]
    spikes: Annotated[int, Field(description="buckets flagged as spikes")]


def spikes_doc(buckets: Sequence[logs.SpikeBucket], bucket: str, method: str) -> ErrorSpikes:
    return {
        "time_bucket": bucket,
        "method": method,
        "buckets": [
            {
                "timestamp": b.bucket,
                "count": b.count,
                "baseline": b.baseline,
                "score": round(b.score, 3),
                "spike": b.spike,
            }
            for b in buckets
        ],
        "spikes": sum(1 for b in buckets if b.spike),
    }


@closed
class LogPattern(TypedDict):
    pattern: Annotated[str, Field(description="the template, variable parts masked")]
    count: int
    levels: Annotated[dict[str, int], Field(description="level → logs of this pattern")]
    samples: list[str]
    # Only when the analyzer is asked for members, which this API never does.
    members: NotRequired[Annotated[list[int], Field(
        description="positions of the analysed logs; absent here")]]


def cluster_doc(cluster: LogCluster) -> LogPattern:
    doc: LogPattern = {
        "pattern": cluster.pattern,
        "count": cluster.count,
        "levels": dict(cluster.levels),
        "samples": list(cluster.samples),
    }
    if cluster.members is not None:
        doc["members"] = list(cluster.members)
    return doc


@closed
class LogPatterns(TypedDict):
    logs_analyzed: int
    patterns: list[LogPattern]


def patterns_doc(analysed: int, clusters: Sequence[LogCluster]) -> LogPatterns:
    return {"logs_analyzed": analysed, "patterns": [cluster_doc(c) for c in clusters]}
