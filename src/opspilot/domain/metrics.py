"""Metric points and the queries the explorer asks of them."""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime

import attrs

from opspilot.domain.errors import ValidationError
from opspilot.domain.timewindow import Bucketing, TimeRange, require_aware

NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,99}$")
MAX_TAGS = 32
MAX_TAG_LENGTH = 200
# |value| bound for a metric point: PostgreSQL's avg(float8) also sums squares (float8_accum),
# which overflows past ~1.3e154; at 1e150 sums of squares of 1e8 such points stay finite.
# PostgreSQL raises on float8 overflow (a 500 on the query) and the in-memory store's fsum
# raises too, so the bound is where a value enters, not where it is aggregated.
MAX_ABS_VALUE = 1e150


class Aggregation(enum.StrEnum):
    AVG = "avg"
    SUM = "sum"
    MIN = "min"
    MAX = "max"
    COUNT = "count"
    P50 = "p50"
    P90 = "p90"
    P95 = "p95"
    P99 = "p99"

    @property
    def quantile(self) -> float | None:
        return int(self.value[1:]) / 100 if self.value.startswith("p") else None

    @classmethod
    def parse(cls, text: str, field: str = "aggregation") -> Aggregation:
        try:
            return cls(text.lower())
        except ValueError:
            allowed = ", ".join(a.value for a in cls)
            raise ValidationError(field, f"unknown aggregation {text!r}; one of {allowed}") from None


def check_name(value: str, field: str) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise ValidationError(
            field, "1-100 characters: letters, digits, '_', '.', ':', '-', starting with a letter"
        )
    return value


def check_tags(tags: Mapping[str, str], field: str = "tags") -> dict[str, str]:
    if len(tags) > MAX_TAGS:
        raise ValidationError(field, f"at most {MAX_TAGS} tags")
    for key, value in tags.items():
        if not key or len(key) > 100 or len(str(value)) > MAX_TAG_LENGTH:
            raise ValidationError(f"{field}.{key}", "tag keys 1-100 and values ≤200 characters")
    return {str(k): str(v) for k, v in tags.items()}


@attrs.frozen
class MetricPoint:
    project_id: str
    timestamp: datetime
    name: str
    value: float
    service: str | None = None
    tags: Mapping[str, str] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        require_aware(self.timestamp, "timestamp")
        if not (math.isfinite(self.value) and abs(self.value) <= MAX_ABS_VALUE):
            raise ValidationError("value", f"must be a finite number within ±{MAX_ABS_VALUE:g}")


@attrs.frozen
class SeriesSelector:
    name: str
    service: str | None = None
    tags: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class MetricQuery:
    project_id: str
    series: SeriesSelector
    window: TimeRange
    aggregation: Aggregation
    bucketing: Bucketing


@attrs.frozen
class BucketValue:
    bucket: datetime
    value: float
    count: int


@attrs.frozen
class Series:
    """One aggregated series, held as three parallel columns (bucket starts ascending, the
    aggregate, the number of points) rather than one object per bucket: a 24 h / 1 m answer
    is 1,440 buckets, and the stores hand columns over as they come from the engine."""

    name: str
    service: str | None
    aggregation: Aggregation
    bucket: str
    buckets: Sequence[datetime]
    values: Sequence[float]
    counts: Sequence[int]

    def __attrs_post_init__(self) -> None:
        if not len(self.buckets) == len(self.values) == len(self.counts):
            raise ValueError("a series' columns must have the same length")

    @classmethod
    def of_points(cls, name: str, service: str | None, aggregation: Aggregation, bucket: str,
                  points: Sequence[BucketValue]) -> Series:
        return cls(name, service, aggregation, bucket, [p.bucket for p in points],
                   [p.value for p in points], [p.count for p in points])

    @property
    def points(self) -> list[BucketValue]:
        return [BucketValue(b, v, c)
                for b, v, c in zip(self.buckets, self.values, self.counts, strict=True)]


@attrs.frozen
class HistogramQuery:
    project_id: str
    series: SeriesSelector
    window: TimeRange
    bins: int


@attrs.frozen
class HistogramBin:
    lower: float
    upper: float
    count: int


@attrs.frozen
class Histogram:
    name: str
    bins: Sequence[HistogramBin]
    total: int
    min: float | None
    max: float | None


def equal_width_edges(low: float, high: float, bins: int) -> list[float]:
    """Edges of `bins` equal-width bins over [low, high]; a flat series gets one unit-wide span."""
    if high <= low:
        high = low + 1.0
    step = (high - low) / bins
    return [low + i * step for i in range(bins)] + [high]


def bin_index(value: float, low: float, high: float, bins: int) -> int:
    """The bin of `value`, with the maximum in the last bin (as SQL `width_bucket` clamped)."""
    if high <= low:
        high = low + 1.0
    index = int((value - low) / (high - low) * bins)
    return min(max(index, 0), bins - 1)


def percentile_cont(sorted_values: Sequence[float], fraction: float) -> float:
    """Linear interpolation between closest ranks, the same rule as SQL `percentile_cont`."""
    if not sorted_values:
        raise ValueError("no values")
    position = fraction * (len(sorted_values) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    weight = position - lower
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * weight


def aggregate(values: Sequence[float], aggregation: Aggregation) -> float:
    """The reference semantics every store must reproduce for one bucket."""
    if aggregation is Aggregation.COUNT:
        return float(len(values))
    if aggregation is Aggregation.SUM:
        return math.fsum(values)
    if aggregation is Aggregation.AVG:
        return math.fsum(values) / len(values)
    if aggregation is Aggregation.MIN:
        return min(values)
    if aggregation is Aggregation.MAX:
        return max(values)
    quantile = aggregation.quantile
    assert quantile is not None
    return percentile_cont(sorted(values), quantile)
