"""In-memory metric store: the reference semantics every real store must reproduce,
including the compacted tier's (MetricCompaction): compaction changes no answer; after
values expire, per-period summaries answer in the bucket of their period's start."""

from __future__ import annotations

import asyncio
import bisect
import math
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime

import attrs

from opspilot.domain import sketch
from opspilot.domain.bucket_counts import (
    Addition,
    Export,
    bucket_bound,
    counts_per_bound,
    series_additions,
)
from opspilot.domain.errors import RecordsRejected
from opspilot.domain.ingest import MetricBatch
from opspilot.domain.labels import (
    Labels,
    SampleSeries,
    SeriesSelection,
    labels_of,
    matches_all,
    millis,
    too_many_samples,
    too_many_series,
)
from opspilot.domain.metrics import (
    COMPACTION_PERIOD,
    COUNTER_LOOKBACK,
    Aggregation,
    BucketValue,
    Histogram,
    HistogramBin,
    HistogramQuery,
    MetricMetadata,
    MetricPoint,
    MetricQuery,
    Series,
    SeriesSelector,
    aggregate,
    bin_index,
    counter_increases,
    equal_width_edges,
    is_delta,
)
from opspilot.domain.ports import CompactionResult, WindowRequest, WindowValue
from opspilot.domain.step_windows import StepValues, StepWindows, step_values
from opspilot.domain.storable import first_problem
from opspilot.domain.timewindow import EARLIEST, Bucketing, TimeRange, utc_day_start

SeriesKey = tuple[str, str]  # (project_id, metric name)
PERIODS = Bucketing(COMPACTION_PERIOD)


@attrs.frozen
class Summary:
    """One series' expired period: what is left of its values."""

    period_start: datetime
    service: str | None
    tags: Mapping[str, str]
    count: int
    total: float
    low: float
    high: float
    sketch: Mapping[int, int]

    @classmethod
    def of(cls, period_start: datetime, points: Sequence[MetricPoint]) -> Summary:
        values = [p.value for p in points]
        return cls(period_start, points[0].service, points[0].tags, len(values),
                   math.fsum(values), min(values), max(values), sketch.sketch_of(values))


def combine(values: Sequence[float], summaries: Sequence[Summary],
            aggregation: Aggregation) -> float:
    """A bucket's aggregate over raw values and expired periods' summaries: exact for
    count/sum/min/max/avg; a percentile from the merged sketch when a summary is in it."""
    if not summaries:
        return aggregate(values, aggregation)
    count = len(values) + sum(s.count for s in summaries)
    if aggregation is Aggregation.COUNT:
        return float(count)
    if aggregation is Aggregation.MIN:
        return min([*values, *(s.low for s in summaries)])
    if aggregation is Aggregation.MAX:
        return max([*values, *(s.high for s in summaries)])
    total = math.fsum([*values, *(s.total for s in summaries)])
    if aggregation is Aggregation.SUM:
        return total
    if aggregation is Aggregation.AVG:
        return total / count
    quantile = aggregation.quantile
    assert quantile is not None
    merged = sketch.merge([sketch.sketch_of(values), *(s.sketch for s in summaries)])
    return sketch.quantile(merged, quantile)


class _Samples:
    """One series' samples: parallel columns, milliseconds ascending, one value each (a later
    write of the same millisecond replaces the earlier one, as the PostgreSQL store does)."""

    __slots__ = ("times", "values")

    def __init__(self) -> None:
        self.times: list[int] = []
        self.values: list[float] = []

    def add(self, ms: int, value: float) -> None:
        if not self.times or ms > self.times[-1]:
            self.times.append(ms)
            self.values.append(value)
            return
        at = bisect.bisect_left(self.times, ms)
        if at < len(self.times) and self.times[at] == ms:
            self.values[at] = value
        else:
            self.times.insert(at, ms)
            self.values.insert(at, value)

    def drop_before(self, ms: int) -> int:
        keep = bisect.bisect_left(self.times, ms)
        del self.times[:keep], self.values[:keep]
        return len(self.times)


class InMemoryMetricStore:
    def __init__(self) -> None:
        self._points: dict[SeriesKey, list[MetricPoint]] = defaultdict(list)
        self._stored_batches: set[str] = set()
        self._metadata: dict[tuple[str, str], MetricMetadata] = {}  # (project, family)
        self._summaries: dict[SeriesKey, list[Summary]] = defaultdict(list)
        self._hot: dict[datetime, int] = defaultdict(int)  # points per period not compacted
        self._lock = asyncio.Lock()
        # The same points as Prometheus series: (project, name) → labels → samples.
        self._series: dict[SeriesKey, dict[Labels, _Samples]] = defaultdict(dict)

    def _index(self, point: MetricPoint) -> None:
        labels = labels_of(point.name, point.service, point.tags)
        group = self._series[(point.project_id, point.name)]
        samples = group.get(labels)
        if samples is None:
            samples = group[labels] = _Samples()
        samples.add(millis(point.timestamp), point.value)

    async def write_batches(self, batches: Sequence[MetricBatch]) -> int:
        """All or nothing, as the PostgreSQL store's one transaction: text PostgreSQL
        could not store refuses the whole call with RecordsRejected."""
        for batch in batches:
            reason = first_problem(_texts(batch.points))
            if reason is not None:
                raise RecordsRejected(f"metric batch {batch.message_id}: a point {reason}")
        written = 0
        async with self._lock:
            for batch in batches:
                if batch.message_id in self._stored_batches:
                    continue
                self._stored_batches.add(batch.message_id)
                for described in batch.metadata:  # the latest description wins
                    self._metadata[(batch.project_id, described.name)] = described
                for point in batch.points:
                    bisect.insort(
                        self._points[(point.project_id, point.name)], point, key=_timestamp
                    )
                    self._index(point)
                    self._hot[PERIODS.floor(point.timestamp)] += 1
                written += len(batch.points)
        return written

    async def query(self, queries: Sequence[MetricQuery]) -> list[Series]:
        return [self._query_one(query) for query in queries]

    def _query_one(self, query: MetricQuery) -> Series:
        if query.aggregation.on_counters:
            return self._counter_series(query)
        buckets: dict[datetime, list[float]] = defaultdict(list)
        for point in self._select(query.project_id, query.series, query.window):
            buckets[query.bucketing.floor(point.timestamp)].append(point.value)
        summaries: dict[datetime, list[Summary]] = defaultdict(list)
        for summary in self._select_summaries(query.project_id, query.series, query.window):
            summaries[query.bucketing.floor(summary.period_start)].append(summary)
        values = []
        for start in sorted(buckets.keys() | summaries.keys()):
            vals, sums = buckets.get(start, []), summaries.get(start, [])
            count = len(vals) + sum(s.count for s in sums)
            values.append(BucketValue(start, combine(vals, sums, query.aggregation), count))
        return Series.of_points(
            query.series.name, query.series.service, query.aggregation,
            query.bucketing.label, values,
        )

    def _growths(self, project_id: str, series: SeriesSelector, window: TimeRange
                 ) -> Iterator[tuple[datetime, float]]:
        """(time, growth) of every matching counter series (domain.counter_increases),
        reading COUNTER_LOOKBACK before the window for the first sample's predecessor."""
        reach = TimeRange(max(window.start - COUNTER_LOOKBACK, EARLIEST), window.end)
        by_series: dict[tuple[str | None, frozenset[tuple[str, str]]], list[MetricPoint]] = (
            defaultdict(list))
        for point in self._select(project_id, series, reach):
            by_series[(point.service, frozenset(point.tags.items()))].append(point)
        for points in by_series.values():
            ordered = sorted((p.timestamp, p.value) for p in points)
            yield from counter_increases(ordered, window.start, is_delta(points[0].tags))

    def _counter_series(self, query: MetricQuery) -> Series:
        buckets: dict[datetime, list[float]] = defaultdict(list)
        for moment, grown in self._growths(query.project_id, query.series, query.window):
            buckets[query.bucketing.floor(moment)].append(grown)
        seconds = query.bucketing.width.total_seconds()
        per = seconds if query.aggregation is Aggregation.RATE else 1.0
        values = [BucketValue(start, math.fsum(grown) / per, len(grown))
                  for start, grown in sorted(buckets.items())]
        return Series.of_points(query.series.name, query.series.service, query.aggregation,
                                query.bucketing.label, values)

    async def bucket_increases(self, query: MetricQuery) -> dict[str, Series]:
        window, floor = query.window, query.bucketing.floor
        reach = TimeRange(max(window.start - COUNTER_LOOKBACK, EARLIEST), window.end)
        # (service, tags but `le`) → time → that export's (bound, le, count)
        series: dict[tuple[str | None, frozenset[tuple[str, str]]],
                     dict[datetime, list[tuple[float, str, float]]]] = defaultdict(
            lambda: defaultdict(list))
        for point in self._select(query.project_id, query.series, reach):
            le = point.tags.get("le", "")
            bound = bucket_bound(le)
            if bound is not None:
                rest = frozenset((k, v) for k, v in point.tags.items() if k != "le")
                series[(point.service, rest)][point.timestamp].append((bound, le, point.value))
        per_bucket: dict[datetime, list[Addition]] = defaultdict(list)
        for (_, rest), by_time in series.items():
            exports = [Export(at, tuple(counts)) for at, counts in sorted(by_time.items())]
            for addition in series_additions(exports, window.start, is_delta(dict(rest))):
                per_bucket[floor(addition.at)].append(addition)
        found: dict[str, list[BucketValue]] = defaultdict(list)
        for start in sorted(per_bucket):
            for le, (count, n) in counts_per_bound(per_bucket[start]).items():
                found[le].append(BucketValue(start, count, n))
        return {le: Series.of_points(query.series.name, query.series.service,
                                     Aggregation.INCREASE, query.bucketing.label, values)
                for le, values in sorted(found.items())}

    async def drop_before(self, cutoff: datetime | None,
                          by_project: Mapping[str, datetime | None] | None = None) -> list[str]:
        """Drops every point and summary before the start of its project's cutoff's UTC day
        (as whole partitions would); returns the days emptied."""
        boundary = _Boundaries(cutoff, by_project)
        async with self._lock:
            days = self._take_before(boundary, summarise=False)
            for key, summaries in self._summaries.items():
                ends = boundary.of(key[0])
                if ends is None:
                    continue
                days.update(_day(s.period_start) for s in summaries if s.period_start < ends)
                self._summaries[key] = [s for s in summaries if s.period_start >= ends]
        return sorted(days)

    def _take_before(self, boundary: _Boundaries, summarise: bool) -> set[str]:
        days: set[str] = set()
        for key, points in self._points.items():
            ends = boundary.of(key[0])
            if ends is None:
                continue
            keep = bisect.bisect_left(points, ends, key=_timestamp)
            days.update(_day(p.timestamp) for p in points[:keep])
            if summarise:
                self._summaries[key].extend(_summaries_of(points[:keep]))
            self._forget_hot(points[:keep])
            self._points[key] = points[keep:]
        for (project_id, _), group in self._series.items():
            ends = boundary.of(project_id)  # raw samples go with the values
            if ends is None:
                continue
            for labels, samples in list(group.items()):
                if not samples.drop_before(millis(ends)):
                    del group[labels]
        return days

    def _forget_hot(self, points: Sequence[MetricPoint]) -> None:
        """Dropped points no longer wait for compaction (a compacted period has no entry)."""
        for point in points:
            period = PERIODS.floor(point.timestamp)
            if period in self._hot:
                self._hot[period] -= 1
                if self._hot[period] <= 0:
                    del self._hot[period]

    async def compact(self, before: datetime, max_periods: int = 1_000) -> CompactionResult:
        """Nothing moves (answers are the same either way); counts what a real store would
        compact, so callers see the same progress and backlog."""
        limit = PERIODS.floor(before)
        async with self._lock:
            due = sorted(p for p in self._hot if p < limit)
            taken = due[:max_periods]
            points = sum(self._hot.pop(p) for p in taken)
        return CompactionResult(len(taken), points, len(due) - len(taken))

    async def expire_values_before(self, cutoff: datetime | None,
                                   by_project: Mapping[str, datetime | None] | None = None
                                   ) -> list[str]:
        async with self._lock:
            return sorted(self._take_before(_Boundaries(cutoff, by_project), summarise=True))

    async def histogram(self, query: HistogramQuery) -> Histogram:
        values = [p.value for p in self._select(query.project_id, query.series, query.window)]
        if not values:
            return Histogram(query.series.name, [], 0, None, None)
        low, high = min(values), max(values)
        edges = equal_width_edges(low, high, query.bins)
        counts = [0] * query.bins
        for value in values:
            counts[bin_index(value, low, high, query.bins)] += 1
        bins = [HistogramBin(edges[i], edges[i + 1], counts[i]) for i in range(query.bins)]
        return Histogram(query.series.name, bins, len(values), low, high)

    async def metric_names(self, project_id: str, window: TimeRange, limit: int) -> list[str]:
        names = {name for (pid, name), points in self._points.items()
                 if pid == project_id and _any_within(points, window)}
        names.update(name for (pid, name), summaries in self._summaries.items()
                     if pid == project_id and any(window.contains(u.period_start)
                                                  for u in summaries))
        return sorted(names)[:limit]

    async def service_names(
        self, project_id: str, window: TimeRange, metric_name: str | None, limit: int
    ) -> list[str]:
        found = {p.service for p in self._within(project_id, window, metric_name)
                 if p.service is not None}
        return sorted(found)[:limit]

    async def tag_values(
        self, project_id: str, metric_name: str, window: TimeRange, limit: int
    ) -> dict[str, list[str]]:
        values: dict[str, set[str]] = defaultdict(set)
        for point in self._within(project_id, window, metric_name):
            for key, value in point.tags.items():
                values[key].add(value)
        return {key: sorted(values[key])[:limit] for key in sorted(values)[:limit]}

    def _within(
        self, project_id: str, window: TimeRange, metric_name: str | None
    ) -> list[MetricPoint | Summary]:
        """The points, and the expired periods' summaries, of the window."""
        names = [metric_name] if metric_name is not None else [
            name for pid, name in self._points.keys() | self._summaries.keys()
            if pid == project_id]
        found: list[MetricPoint | Summary] = []
        for name in names:
            found.extend(self._select(project_id, SeriesSelector(name), window))
            found.extend(self._select_summaries(project_id, SeriesSelector(name), window))
        return found

    async def aggregate_windows(self, requests: Sequence[WindowRequest]) -> list[WindowValue]:
        results = []
        for request in requests:
            if request.aggregation.on_counters:
                results.append(self._counter_window(request))
                continue
            values = [p.value for p in self._select(request.project_id, request.series, request.window)]
            sums = self._select_summaries(request.project_id, request.series, request.window)
            count = len(values) + sum(s.count for s in sums)
            value = combine(values, sums, request.aggregation) if count else None
            results.append(WindowValue(value, count))
        return results

    async def metric_metadata(self, project_id: str) -> dict[str, MetricMetadata]:
        return {name: m for (project, name), m in self._metadata.items() if project == project_id}

    async def select_samples(self, selection: SeriesSelection) -> list[SampleSeries]:
        result = []
        touched = 0
        for labels, samples in self._matching(selection):
            lo = bisect.bisect_left(samples.times, selection.start_ms)
            hi = bisect.bisect_right(samples.times, selection.end_ms)
            if lo == hi:
                continue
            touched += hi - lo
            if touched > selection.limits.max_samples:
                raise too_many_samples(selection.limits)
            result.append(SampleSeries(labels, samples.times[lo:hi], samples.values[lo:hi]))
            if len(result) > selection.limits.max_series:
                raise too_many_series(selection.limits)
        return result

    async def select_step_values(self, selection: SeriesSelection, windows: StepWindows
                                 ) -> StepValues:
        return step_values(windows, await self.select_samples(selection))

    async def select_labels(self, selection: SeriesSelection) -> list[Labels]:
        found = []
        for labels, samples in self._matching(selection):
            lo = bisect.bisect_left(samples.times, selection.start_ms)
            if lo < len(samples.times) and samples.times[lo] <= selection.end_ms:
                found.append(labels)
                if len(found) > selection.limits.max_series:
                    raise too_many_series(selection.limits)
        return found

    def _matching(self, selection: SeriesSelection) -> list[tuple[Labels, _Samples]]:
        name = selection.metric_name()
        if name is not None:
            groups = [self._series.get((selection.project_id, name), {})]
        else:
            groups = [g for (pid, _), g in self._series.items() if pid == selection.project_id]
        return sorted(
            (labels, samples) for group in groups for labels, samples in group.items()
            if matches_all(dict(labels), selection.matchers)
        )

    def _counter_window(self, request: WindowRequest) -> WindowValue:
        grown = [g for _, g in self._growths(request.project_id, request.series,
                                                request.window)]
        if not grown:
            return WindowValue(None, 0)
        per = (request.window.span.total_seconds()
               if request.aggregation is Aggregation.RATE else 1.0)
        return WindowValue(math.fsum(grown) / per, len(grown))

    async def ping(self) -> None:
        return None

    def _select(
        self, project_id: str, series: SeriesSelector, window: TimeRange
    ) -> list[MetricPoint]:
        points = self._points.get((project_id, series.name), [])
        lo = bisect.bisect_left(points, window.start, key=_timestamp)
        hi = bisect.bisect_left(points, window.end, key=_timestamp)
        return [p for p in points[lo:hi] if _matches(p, series)]

    def _select_summaries(
        self, project_id: str, series: SeriesSelector, window: TimeRange
    ) -> list[Summary]:
        return [s for s in self._summaries.get((project_id, series.name), [])
                if window.contains(s.period_start) and _matches(s, series)]

    def count(self, project_id: str) -> int:
        """Test helper: points stored for a project."""
        return sum(len(v) for (pid, _), v in self._points.items() if pid == project_id)


@attrs.frozen
class _Boundaries:
    """Where each project's retention ends: the start of its cutoff's UTC day (None: kept)."""

    default: datetime | None
    by_project: Mapping[str, datetime | None] | None

    def of(self, project_id: str) -> datetime | None:
        projects = self.by_project or {}
        cutoff = projects.get(project_id, self.default)
        return None if cutoff is None else utc_day_start(cutoff)


def _texts(points: Sequence[MetricPoint]) -> Iterator[str | None]:
    for point in points:
        yield point.project_id
        yield point.name
        yield point.service
        yield from point.tags.keys()
        yield from point.tags.values()


def _timestamp(point: MetricPoint):  # type: ignore[no-untyped-def]
    return point.timestamp


def _any_within(points: list[MetricPoint], window: TimeRange) -> bool:
    lo = bisect.bisect_left(points, window.start, key=_timestamp)
    return lo < len(points) and points[lo].timestamp < window.end


def _day(moment: datetime) -> str:
    return moment.astimezone(UTC).date().isoformat()


def _summaries_of(points: Sequence[MetricPoint]) -> list[Summary]:
    groups: dict[tuple[object, ...], list[MetricPoint]] = defaultdict(list)
    for p in points:
        groups[(PERIODS.floor(p.timestamp), p.service, tuple(sorted(p.tags.items())))].append(p)
    return [Summary.of(key[0], group) for key, group in groups.items()]  # type: ignore[arg-type]


def _matches(point: MetricPoint | Summary, series: SeriesSelector) -> bool:
    if series.service is not None and point.service != series.service:
        return False
    return all(point.tags.get(k) == v for k, v in series.tags.items())
