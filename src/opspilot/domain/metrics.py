"""Metric points and the queries the explorer asks of them."""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import attrs

from opspilot.domain.analysis import AnomalyMethod
from opspilot.domain.errors import ValidationError
from opspilot.domain.storable import check_text
from opspilot.domain.timewindow import Bucketing, TimeRange, require_aware

NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,99}$")
MAX_TAGS = 32
MAX_TAG_LENGTH = 200
# |value| bound for a metric point: PostgreSQL's avg(float8) also sums squares (float8_accum),
# which overflows past ~1.3e154; at 1e150 sums of squares of 1e8 such points stay finite.
# PostgreSQL raises on float8 overflow (a 500 on the query) and the in-memory store's fsum
# raises too, so the bound is where a value enters, not where it is aggregated.
MAX_ABS_VALUE = 1e150
# The compacted tier's block: one per series and epoch-aligned hour (ADR 0017).
COMPACTION_PERIOD = timedelta(hours=1)


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
    # Counters (cumulative values, as OTLP sums and Prometheus counters arrive): what they
    # grew by in each bucket, and that per second of the bucket; see counter_increases.
    INCREASE = "increase"
    RATE = "rate"

    @property
    def quantile(self) -> float | None:
        return int(self.value[1:]) / 100 if self.value.startswith("p") else None

    @property
    def on_counters(self) -> bool:
        return self in (Aggregation.INCREASE, Aggregation.RATE)

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


class MetricType(enum.StrEnum):
    """A metric family's type, as Prometheus' metadata names it."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"
    SUMMARY = "summary"
    UNKNOWN = "unknown"


@attrs.frozen
class MetricMetadata:
    """What an ingest protocol said about a metric family: OTLP's data kind, description and
    unit, or a remote-write request's metadata. `name` is the family's (a histogram's points
    are stored as `<name>_bucket`, `_sum`, `_count`)."""

    name: str
    type: MetricType
    help: str = ""
    unit: str = ""

    def __attrs_post_init__(self) -> None:
        for field, text in (("name", self.name), ("help", self.help), ("unit", self.unit)):
            check_text(text, field)


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
    """One bucket of a `Series`: its start, the aggregate, how many points it holds."""

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
class AnomalyQuery:
    """The series averaged per bucket over the window, and the buckets whose calibrated
    anomaly score is at least `threshold` (in (0, 1])."""

    project_id: str
    series: SeriesSelector
    window: TimeRange
    bucketing: Bucketing
    threshold: float
    method: AnomalyMethod


@attrs.frozen
class HistogramBin:
    """Values in [lower, upper) (the last bin also holds its upper edge)."""

    lower: float
    upper: float
    count: int


@attrs.frozen
class Histogram:
    """Equal-width bins between the smallest and largest value of the window;
    `min`/`max` are None when the window holds no point."""

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


def bucket_series_name(histogram: str) -> str:
    """Where a histogram's cumulative bucket counters live (the Prometheus layout)."""
    return f"{histogram}_bucket"


# How far before a window a counter's previous sample is looked for, so that the window's
# first sample has something to grow from (Prometheus' default lookback delta).
COUNTER_LOOKBACK = timedelta(minutes=5)

# The tag that marks a series of DELTA values (OTLP sums and histograms exported with delta
# temporality): each sample is what the counter grew by since the previous export, not a
# running total. The name and value are those of Prometheus' native delta ingestion
# (`__temporality__="delta"`); a series without it is cumulative.
TEMPORALITY_TAG = "__temporality__"
DELTA = "delta"


def is_delta(tags: Mapping[str, str]) -> bool:
    return tags.get(TEMPORALITY_TAG) == DELTA


def counter_increases(samples: Sequence[tuple[datetime, float]],
                      start: datetime, delta: bool = False) -> list[tuple[datetime, float]]:
    """The growth of ONE counter series (samples in time order, ties by value): for each
    sample at or after `start` that has a predecessor, what the counter grew by since
    that predecessor, stamped with the sample's time. A drop is a reset (the process
    restarted from zero), so the growth is the new value itself, as in Prometheus.

    `increase` of a bucket is the sum of the growths stamped in it, summed over the series
    the selector matches (each distinct service and tag set is one series); `rate` is that
    divided by the bucket's seconds. The predecessor of a window's first sample may lie up
    to COUNTER_LOOKBACK before the window (the store reads that far back); a series' very
    first sample grows from nothing known, so it adds nothing.

    A `delta` series (is_delta) holds growths already: each sample at or after `start` is
    its own growth, the first one included, and nothing is a reset.
    """
    if delta:
        return [(moment, value) for moment, value in samples if moment >= start]
    grown = []
    previous: float | None = None
    for moment, value in samples:
        if previous is not None and moment >= start:
            grown.append((moment, value - previous if value >= previous else value))
        previous = value
    return grown


def histogram_quantile(quantile: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile over cumulative (upper bound, count) buckets, the
    last of which is +Inf: the rank's bucket found, then linear interpolation inside it
    (from 0 for the first bucket when its bound is positive); a rank in the +Inf bucket
    answers the highest finite bound. None without observations or a +Inf bucket.
    Counts that fall with the bound (which only out-of-order data makes) are raised to
    the running maximum, as Prometheus does."""
    ordered = sorted(buckets)
    if len(ordered) < 2 or ordered[-1][0] != math.inf:
        return None
    counts = []
    running = 0.0
    for _, count in ordered:
        running = max(running, count)
        counts.append(running)
    total = counts[-1]
    if total <= 0:
        return None
    rank = quantile * total
    index = next(i for i, c in enumerate(counts) if c >= rank)
    if index == len(ordered) - 1:
        return ordered[-2][0]
    upper = ordered[index][0]
    if index == 0 and upper <= 0:
        return upper
    lower = 0.0 if index == 0 else ordered[index - 1][0]
    below = 0.0 if index == 0 else counts[index - 1]
    inside = counts[index] - below
    if inside <= 0:
        return upper
    return lower + (upper - lower) * (rank - below) / inside


def aggregate(values: Sequence[float], aggregation: Aggregation) -> float:
    """The reference semantics every store must reproduce for one bucket (counter
    aggregations excepted: they need the samples' series and order, see counter_increases)."""
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
    if quantile is None:
        raise ValueError(f"{aggregation.value} needs the samples of each series in order")
    return percentile_cont(sorted(values), quantile)
