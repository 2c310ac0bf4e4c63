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
from datetime import UTC, datetime, timedelta
from typing import Any

from opspilot.application.ingest import MAX_AHEAD, TimeCheck
from opspilot.domain.errors import ValidationError
from opspilot.domain.metrics import (
    DELTA,
    MAX_ABS_VALUE,
    TEMPORALITY_TAG,
    MetricMetadata,
    MetricPoint,
    MetricType,
)
from opspilot.entrypoints.api.otlp.mapped import Mapped
from opspilot.entrypoints.api.otlp.values import (
    EPOCH,
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
    """Per-request state: the time rules, as nanosecond bounds, and the timestamps already
    converted."""

    def __init__(self, times: TimeCheck, project_id: str) -> None:
        self.times = times
        self.project = project_id
        # TimeCheck.problem's bounds on the microsecond a datetime keeps, in nanoseconds: a
        # timestamp between them is kept without building the refusal's datetimes.
        ahead = _micros(times.now + MAX_AHEAD)
        self.latest_ns = ahead * 1000 + 999
        self.oldest_ns = max(1, _micros(times.now - times.keep) * 1000) if times.keep else 1
        self.good: dict[int, datetime] = {}  # the accepted ones, for the per-point fast path

    def stamp(self, nanos: int) -> datetime:
        """`nanos` as a datetime, or Refused with TimeCheck's reason (a point's
        time_unix_nano: 0 means unset, which the spec does not allow)."""
        moment = self.good.get(nanos)
        return moment if moment is not None else self.convert(nanos)

    def convert(self, nanos: int) -> datetime:
        """stamp() for a timestamp not seen yet in this request."""
        if self.oldest_ns <= nanos <= self.latest_ns:
            # (as_datetime's fast branch: the latest bound is centuries before its limit)
            moment = self.good[nanos] = datetime.fromtimestamp((nanos // 1000) / 1e6, UTC)
            return moment
        if not nanos:
            raise Refused("timeUnixNano", "required (nanoseconds since the epoch)")
        raise Refused("timeUnixNano", self.times.problem(as_datetime(nanos)) or "out of range")


def _micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def map_metrics(request: Any, times: TimeCheck, project_id: str) -> Mapped:
    """Every data point of an ExportMetricsServiceRequest, mapped to the points of the
    key's project (built once, here: IngestService.accept_points), or refused."""
    mapped = Mapped()
    ctx = _Context(times, project_id)
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
    _describe(metric, kind, mapped)
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


_TYPES = {"gauge": MetricType.GAUGE, "histogram": MetricType.HISTOGRAM,
          "exponential_histogram": MetricType.HISTOGRAM, "summary": MetricType.SUMMARY}


def _describe(metric: Any, kind: str, mapped: Mapped) -> None:
    """The family's type (a monotonic sum is a counter, any other sum a gauge), description
    and unit, for the Prometheus API's metadata. Text the stores cannot hold leaves the
    family undescribed (its points are still kept)."""
    if kind == "sum":
        kind_type = MetricType.COUNTER if metric.sum.is_monotonic else MetricType.GAUGE
    else:
        kind_type = _TYPES[kind]
    try:
        mapped.metadata.append(MetricMetadata(metric.name, kind_type, metric.description,
                                              metric.unit))
    except ValidationError:
        return


def _map_numbers(points: Any, name: str, service: str | None, where: str, kind: str,
                 ctx: _Context, mapped: Mapped, delta: bool) -> None:
    """Gauge and sum points: the bulk of most exports, so one loop without a call per
    point for what the common case does not need."""
    out = mapped.records
    good = ctx.good
    project = ctx.project
    extra = 1 if delta else 0
    for di, point in enumerate(points):
        try:
            if point.flags & NO_RECORDED_VALUE:
                mapped.skipped += 1
                continue
            nanos = point.time_unix_nano
            moment = good.get(nanos) or ctx.convert(nanos)
            # One oneof read fewer: as_double reads 0.0 when the point has as_int (or an
            # as_double of 0.0, which as_int's default 0 gives back).
            value = point.as_double or float(point.as_int)
            if not -MAX_ABS_VALUE <= value <= MAX_ABS_VALUE:  # NaN fails both
                check_value(value, "asDouble")
            tags = tags_of(point.attributes, extra)
            if delta:
                tags[TEMPORALITY_TAG] = DELTA
            out.append(MetricPoint(project, moment, name, value, service, tags))
        except Refused as refused:
            mapped.refuse(f"{where}.{kind}.dataPoints[{di}].{refused.field}", refused.message)


Emitter = Callable[[Any, "str | None", _Context], "list[MetricPoint] | Iterator[MetricPoint]"]


TEMPORAL = ("sum", "histogram", "exponential_histogram")


def _with_temporality(tags: dict[str, str], delta: bool) -> dict[str, str]:
    if delta:
        tags[TEMPORALITY_TAG] = DELTA
    return tags


def _numbers(name: str, delta: bool) -> Emitter:
    check_name(name)

    def emit(point: Any, service: str | None, ctx: _Context) -> list[MetricPoint]:
        moment = ctx.stamp(point.time_unix_nano)
        if point.WhichOneof("value") == "as_int":
            value = float(point.as_int)
        else:
            value = check_value(point.as_double, "asDouble")
        tags = _with_temporality(tags_of(point.attributes, int(delta)), delta)
        return [MetricPoint(ctx.project, moment, name, value, service, tags)]

    return emit


def _suffixed(name: str) -> tuple[str, str, str]:
    return (check_name(f"{name}_bucket", "name"), check_name(f"{name}_sum", "name"),
            check_name(f"{name}_count", "name"))


def _histogram(name: str, delta: bool) -> Emitter:
    bucket, total, count = _suffixed(name)

    def emit(point: Any, service: str | None, ctx: _Context) -> list[MetricPoint]:
        moment = ctx.stamp(point.time_unix_nano)
        tags = _with_temporality(tags_of(point.attributes, extra=1 + delta), delta)
        bounds, counts = point.explicit_bounds, point.bucket_counts
        if counts and len(counts) != len(bounds) + 1:
            raise Refused("bucketCounts", f"{len(counts)} counts for {len(bounds)} bounds"
                                          " (must be one more than the bounds)")
        out = _tail(total, count, point, moment, service, tags, ctx)
        running = 0
        previous = float("-inf")
        for bound, n in zip(bounds, counts, strict=False):
            if not bound > previous:
                raise Refused("explicitBounds", "must be strictly increasing")
            previous = bound
            running += n
            out.append(MetricPoint(ctx.project, moment, bucket, float(running), service,
                                   {**tags, "le": go_float(check_value(bound, "explicitBounds"))}))
        if counts:
            out.append(MetricPoint(ctx.project, moment, bucket, float(point.count), service,
                                   {**tags, "le": "+Inf"}))
        return out

    return emit


def _tail(total: str, count: str, point: Any, moment: datetime, service: str | None,
          tags: dict[str, str], ctx: _Context, has_sum: bool | None = None) -> list[MetricPoint]:
    """`<name>_count`, and `<name>_sum` when the point has one (`sum` is proto3 `optional`
    on histogram points: absent when the measurements could be negative; summaries always
    have one)."""
    out = [MetricPoint(ctx.project, moment, count, float(point.count), service, tags)]
    if point.HasField("sum") if has_sum is None else has_sum:
        out.append(MetricPoint(ctx.project, moment, total, check_value(point.sum, "sum"), service,
                               tags))
    return out


def _exponential(name: str, delta: bool) -> Emitter:
    bucket, total, count = _suffixed(name)

    def emit(point: Any, service: str | None, ctx: _Context) -> list[MetricPoint]:
        moment = ctx.stamp(point.time_unix_nano)
        tags = _with_temporality(tags_of(point.attributes, extra=1 + delta), delta)
        out = _tail(total, count, point, moment, service, tags, ctx)
        running = 0
        for upper, n in exponential_buckets(point):
            running += n
            out.append(MetricPoint(ctx.project, moment, bucket, float(running), service,
                                   {**tags, "le": go_float(upper)}))
        out.append(MetricPoint(ctx.project, moment, bucket, float(point.count), service,
                               {**tags, "le": "+Inf"}))
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

    def emit(point: Any, service: str | None, ctx: _Context) -> list[MetricPoint]:
        moment = ctx.stamp(point.time_unix_nano)
        tags = tags_of(point.attributes, extra=1)
        out = _tail(total, count, point, moment, service, tags, ctx, has_sum=True)
        for quantile in point.quantile_values:
            out.append(MetricPoint(ctx.project, moment, name,
                                   check_value(quantile.value, "quantileValues"), service,
                                   {**tags, "quantile": go_float(quantile.quantile)}))
        return out

    return emit


EMITTERS: dict[str, Callable[[str, bool], Emitter]] = {
    "gauge": _numbers, "sum": _numbers, "histogram": _histogram,
    "exponential_histogram": _exponential, "summary": _summary,
}
