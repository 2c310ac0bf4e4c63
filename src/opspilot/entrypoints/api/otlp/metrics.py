"""OTLP metrics → metric points (docs/otlp.md has the table).

Gauges and sums: one point per data point, attributes as tags, values as given (cumulative
counters stay cumulative; the query side's `increase`/`rate` handle resets). Histograms are
stored as Prometheus stores them, so that percentiles come from the buckets: cumulative
`<name>_bucket` points with an `le` tag (`+Inf` = the count), `<name>_sum`, `<name>_count`.
Exponential histograms become the same explicit-bound buckets; summaries become
`<name>{quantile=…}`, `<name>_sum`, `<name>_count`. Sums and histograms of DELTA
temporality are stored as sent too, tagged `__temporality__: delta`, which tells the query
side that each value is already a growth (domain.counter_increases).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from opspilot.application.ingest import TimeCheck
from opspilot.domain.metrics import DELTA, MAX_ABS_VALUE, TEMPORALITY_TAG
from opspilot.entrypoints.api.otlp.mapped import Mapped, MetricIn
from opspilot.entrypoints.api.otlp.values import (
    Refused,
    as_datetime,
    check_name,
    check_value,
    go_float,
    service_of,
    tags_of,
)

NO_RECORDED_VALUE = 1  # DataPointFlags.FLAG_NO_RECORDED_VALUE_MASK
DELTA_TEMPORALITY = 1  # AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
KINDS = {"gauge": "gauge", "sum": "sum", "histogram": "histogram",
         "exponential_histogram": "exponentialHistogram", "summary": "summary"}


class _Context:
    """Per-request state: the time rules and the timestamps already converted."""

    def __init__(self, times: TimeCheck) -> None:
        self.times = times
        self.stamps: dict[int, tuple[datetime, str | None]] = {}
        self.good: dict[int, datetime] = {}  # the accepted ones, for the per-point fast path

    def stamp(self, nanos: int) -> datetime:
        good = self.good.get(nanos)
        if good is not None:
            return good
        found = self.stamps.get(nanos)
        if found is None:
            if not nanos:
                found = (datetime.min, "required (nanoseconds since the epoch)")
            else:
                moment = as_datetime(nanos)
                found = (moment, self.times.problem(moment))
            self.stamps[nanos] = found
        if found[1] is not None:
            raise Refused("timeUnixNano", found[1])
        self.good[nanos] = found[0]
        return found[0]


def map_metrics(request: Any, times: TimeCheck) -> Mapped:
    """Every data point of an ExportMetricsServiceRequest, mapped or refused."""
    mapped = Mapped()
    ctx = _Context(times)
    for ri, resource_metrics in enumerate(request.resource_metrics):
        where = f"resourceMetrics[{ri}]"
        try:
            service = service_of(resource_metrics.resource.attributes)
        except Refused as refused:
            mapped.refuse(f"{where}.{refused.field}", refused.message,
                          sum(_points(m) for s in resource_metrics.scope_metrics for m in s.metrics))
            continue
        for si, scope_metrics in enumerate(resource_metrics.scope_metrics):
            for mi, metric in enumerate(scope_metrics.metrics):
                _map_metric(metric, service, f"{where}.scopeMetrics[{si}].metrics[{mi}]",
                            ctx, mapped)
    return mapped


def _points(metric: Any) -> int:
    kind = metric.WhichOneof("data")
    return len(getattr(metric, kind).data_points) if kind else 0


def _map_metric(metric: Any, service: str | None, where: str, ctx: _Context,
                mapped: Mapped) -> None:
    kind = metric.WhichOneof("data")
    if kind is None:
        return  # no data: nothing to keep, nothing refused
    data = getattr(metric, kind)
    points = data.data_points
    # (gauges and summaries have no temporality; UNSPECIFIED is read as cumulative)
    delta = kind in TEMPORAL and data.aggregation_temporality == DELTA_TEMPORALITY
    try:
        emit = EMITTERS[kind](metric.name, delta)
    except Refused as refused:
        mapped.refuse(f"{where}.{refused.field}", refused.message, len(points))
        return
    out = mapped.records
    if kind in ("gauge", "sum"):
        _map_numbers(points, metric.name, service, where, kind, ctx, mapped, delta)
        return
    for di, point in enumerate(points):
        if point.flags & NO_RECORDED_VALUE:
            mapped.skipped += 1
            continue
        try:
            out.extend(emit(point, service, ctx))
        except Refused as refused:
            mapped.refuse(f"{where}.{KINDS[kind]}.dataPoints[{di}].{refused.field}",
                          refused.message)


def _map_numbers(points: Any, name: str, service: str | None, where: str, kind: str,
                 ctx: _Context, mapped: Mapped, delta: bool) -> None:
    """Gauge and sum points: the bulk of most exports, so one loop without a call per
    point for what the common case does not need."""
    out = mapped.records
    good = ctx.good
    extra = 1 if delta else 0
    for di, point in enumerate(points):
        try:
            if point.flags & NO_RECORDED_VALUE:
                mapped.skipped += 1
                continue
            nanos = point.time_unix_nano
            moment = good.get(nanos) or ctx.stamp(nanos)
            if point.HasField("as_double"):
                value = point.as_double
                if not -MAX_ABS_VALUE <= value <= MAX_ABS_VALUE:  # NaN fails both
                    check_value(value, "asDouble")
            else:
                value = float(point.as_int)
            tags = tags_of(point.attributes, extra)
            if delta:
                tags[TEMPORALITY_TAG] = DELTA
            out.append(MetricIn(name, value, moment, service, tags))
        except Refused as refused:
            mapped.refuse(f"{where}.{kind}.dataPoints[{di}].{refused.field}", refused.message)


Emitter = Callable[[Any, "str | None", _Context], "list[MetricIn] | Iterator[MetricIn]"]


TEMPORAL = ("sum", "histogram", "exponential_histogram")


def _with_temporality(tags: dict[str, str], delta: bool) -> dict[str, str]:
    if delta:
        tags[TEMPORALITY_TAG] = DELTA
    return tags


def _numbers(name: str, delta: bool) -> Emitter:
    check_name(name)

    def emit(point: Any, service: str | None, ctx: _Context) -> list[MetricIn]:
        moment = ctx.stamp(point.time_unix_nano)
        if point.WhichOneof("value") == "as_int":
            value = float(point.as_int)
        else:
            value = check_value(point.as_double, "asDouble")
        tags = _with_temporality(tags_of(point.attributes, int(delta)), delta)
        return [MetricIn(name, value, moment, service, tags)]

    return emit


def _suffixed(name: str) -> tuple[str, str, str]:
    return (check_name(f"{name}_bucket", "name"), check_name(f"{name}_sum", "name"),
            check_name(f"{name}_count", "name"))


def _histogram(name: str, delta: bool) -> Emitter:
    bucket, total, count = _suffixed(name)

    def emit(point: Any, service: str | None, ctx: _Context) -> list[MetricIn]:
        moment = ctx.stamp(point.time_unix_nano)
        tags = _with_temporality(tags_of(point.attributes, extra=1 + delta), delta)
        bounds, counts = point.explicit_bounds, point.bucket_counts
        if counts and len(counts) != len(bounds) + 1:
            raise Refused("bucketCounts", f"{len(counts)} counts for {len(bounds)} bounds"
                                          " (must be one more than the bounds)")
        out = _tail(total, count, point, moment, service, tags, point.HasField("sum"))
        running = 0
        previous = float("-inf")
        for bound, n in zip(bounds, counts, strict=False):
            if not bound > previous:
                raise Refused("explicitBounds", "must be strictly increasing")
            previous = bound
            running += n
            out.append(MetricIn(bucket, float(running), moment, service,
                                {**tags, "le": go_float(check_value(bound, "explicitBounds"))}))
        if counts:
            out.append(MetricIn(bucket, float(point.count), moment, service, {**tags, "le": "+Inf"}))
        return out

    return emit


def _tail(total: str, count: str, point: Any, moment: datetime, service: str | None,
          tags: dict[str, str], has_sum: bool) -> list[MetricIn]:
    """`<name>_count`, and `<name>_sum` when the point has one (`sum` is proto3 `optional`
    on histogram points: absent when the measurements could be negative)."""
    out = [MetricIn(count, float(point.count), moment, service, tags)]
    if has_sum:
        out.append(MetricIn(total, check_value(point.sum, "sum"), moment, service, tags))
    return out


def _exponential(name: str, delta: bool) -> Emitter:
    bucket, total, count = _suffixed(name)

    def emit(point: Any, service: str | None, ctx: _Context) -> list[MetricIn]:
        moment = ctx.stamp(point.time_unix_nano)
        tags = _with_temporality(tags_of(point.attributes, extra=1 + delta), delta)
        out = _tail(total, count, point, moment, service, tags, point.HasField("sum"))
        running = 0
        for upper, n in exponential_buckets(point):
            running += n
            out.append(MetricIn(bucket, float(running), moment, service,
                                {**tags, "le": go_float(upper)}))
        out.append(MetricIn(bucket, float(point.count), moment, service, {**tags, "le": "+Inf"}))
        return out

    return emit


def exponential_buckets(point: Any) -> list[tuple[float, int]]:
    """(upper bound, count) from the lowest bucket up: the negative buckets (bucket i holds
    [-base^(i+1), -base^i)), the zero bucket (up to zero_threshold), the positive buckets
    (bucket i holds (base^i, base^(i+1)]), with base = 2^(2^-scale)."""
    if not -10 <= point.scale <= 20:
        raise Refused("scale", "between -10 and 20")
    step = 2.0 ** -point.scale  # log2 of the base

    def power(index: int) -> float:
        try:
            return check_value(2.0 ** (index * step), "scale")
        except OverflowError:
            raise Refused("scale", "bucket bounds overflow a float") from None

    negative, positive = point.negative, point.positive
    out = [(-power(negative.offset + k), n)
           for k, n in reversed(list(enumerate(negative.bucket_counts)))]
    out.append((point.zero_threshold, point.zero_count))
    out.extend((power(positive.offset + k + 1), n) for k, n in enumerate(positive.bucket_counts))
    return out


def _summary(name: str, delta: bool) -> Emitter:
    check_name(name)
    total, count = check_name(f"{name}_sum"), check_name(f"{name}_count")

    def emit(point: Any, service: str | None, ctx: _Context) -> list[MetricIn]:
        moment = ctx.stamp(point.time_unix_nano)
        tags = tags_of(point.attributes, extra=1)
        out = _tail(total, count, point, moment, service, tags, True)
        for quantile in point.quantile_values:
            out.append(MetricIn(name, check_value(quantile.value, "quantileValues"), moment,
                                service, {**tags, "quantile": go_float(quantile.quantile)}))
        return out

    return emit


EMITTERS: dict[str, Callable[[str, bool], Emitter]] = {
    "gauge": _numbers, "sum": _numbers, "histogram": _histogram,
    "exponential_histogram": _exponential, "summary": _summary,
}
