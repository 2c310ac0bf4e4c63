"""The metrics explorer's use cases: bucketed series, overlays, histograms, anomalies."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

import attrs

from opspilot.application.caching import QueryCache, cache_key
from opspilot.application.limits import QueryLimits
from opspilot.application.rendering import (
    MetricAnomalies,
    MetricNames,
    MetricServices,
    MetricTags,
    anomalies_doc,
    histogram_doc,
    names_doc,
    overlay_doc,
    series_doc,
    services_doc,
    tags_doc,
    to_json,
)
from opspilot.domain.analysis import Anomaly, AnomalyRequest, DataPoint
from opspilot.domain.bucket_counts import bucket_bound
from opspilot.domain.errors import LimitExceeded, ValidationError
from opspilot.domain.metrics import (
    Aggregation,
    AnomalyQuery,
    Histogram,
    HistogramQuery,
    MetricQuery,
    Series,
    bucket_series_name,
    histogram_quantile,
)
from opspilot.domain.ports import Analyzer, MetricStore
from opspilot.domain.timewindow import Bucketing, TimeRange


def _normalised(query: MetricQuery) -> str:
    s = query.series
    return "|".join([
        s.name, s.service or "", repr(sorted(s.tags.items())), query.aggregation.value,
        str(int(query.bucketing.width.total_seconds())),
        query.window.start.isoformat(), query.window.end.isoformat(),
    ])


class MetricQueries:
    def __init__(
        self, store: MetricStore, analyzer: Analyzer, cache: QueryCache, limits: QueryLimits
    ) -> None:
        self._store = store
        self._analyzer = analyzer
        self._cache = cache
        self._limits = limits

    def _window(self, window: TimeRange, bucketing: Bucketing | None = None) -> None:
        if window.span > self._limits.max_range:
            TimeRange.checked(window.start, window.end, self._limits.max_range)
        if bucketing is not None:
            bucketing.check_count(window, self._limits.max_buckets)

    async def series(self, query: MetricQuery) -> bytes:
        """One bucketed series, as JSON bytes (cached)."""
        self._window(query.window, query.bucketing)
        key = cache_key("series", query.project_id, _normalised(query))

        async def compute() -> bytes:
            (series,) = await self._store.query([query])
            if not series.buckets and query.aggregation.quantile is not None:
                series = await self._from_histogram_buckets(query) or series
            return to_json(series_doc(series))

        names = [query.series.name]
        if query.aggregation.quantile is not None:
            names.append(bucket_series_name(query.series.name))
        return await self._cache.get_or_compute(
            "series", key, query.window, compute, (query.project_id, names))

    async def _from_histogram_buckets(self, query: MetricQuery) -> Series | None:
        """A percentile of a histogram stored as Prometheus stores one (`<name>_bucket`
        counters with an `le` tag, as OTLP and remote-write histograms arrive): per bucket
        of time, the observations at or below each bound (MetricStore.bucket_increases:
        counters' increases with resets handled, delta exports each at its own bounds), then
        Prometheus' histogram_quantile over them. The count is the observations in the
        bucket of time. None when the name has no such buckets."""
        selector = attrs.evolve(query.series, name=bucket_series_name(query.series.name))
        by_le = await self._store.bucket_increases(attrs.evolve(query, series=selector))
        bounds: dict[datetime, list[tuple[float, float]]] = defaultdict(list)
        for le, grown in by_le.items():
            upper = bucket_bound(le)
            if upper is None:
                continue  # not a bound: the stores leave such texts out
            for bucket, count in zip(grown.buckets, grown.values, strict=True):
                bounds[bucket].append((upper, count))
        buckets, values, counts = [], [], []
        for bucket in sorted(bounds):
            value = histogram_quantile(query.aggregation.quantile or 0.0, bounds[bucket])
            if value is not None:
                buckets.append(bucket)
                values.append(value)
                counts.append(int(max(count for _, count in bounds[bucket])))
        if not buckets:
            return None
        return Series(query.series.name, query.series.service, query.aggregation,
                      query.bucketing.label, buckets, values, counts)

    def _check_overlay(self, queries: Sequence[MetricQuery]) -> None:
        if not queries:
            raise ValidationError("metrics", "give at least one metric")
        if len(queries) > self._limits.max_series_per_overlay:
            raise LimitExceeded(
                "metrics", f"at most {self._limits.max_series_per_overlay} series per overlay"
            )
        for query in queries:
            self._window(query.window, query.bucketing)

    async def query_series(self, queries: Sequence[MetricQuery]) -> list[Series]:
        """The series themselves, in the order asked, under the same limits as `overlay`.
        Not cached: the cache holds the API's rendered JSON (`series`, `overlay`)."""
        self._check_overlay(queries)
        return await self._store.query(queries)

    async def overlay(self, queries: Sequence[MetricQuery]) -> bytes:
        self._check_overlay(queries)
        key = cache_key("overlay", queries[0].project_id, "#".join(map(_normalised, queries)))

        async def compute() -> bytes:
            series = await self._store.query(queries)
            return to_json(overlay_doc(series))

        # The overlay's TTL follows its latest window, and its key every metric's version.
        latest = max((q.window for q in queries), key=lambda w: w.end)
        names = sorted({q.series.name for q in queries})
        return await self._cache.get_or_compute(
            "overlay", key, latest, compute, (queries[0].project_id, names))

    # -- discovery: each answer says whether the limit cut it short (asks for one more)

    async def names(self, project_id: str, window: TimeRange, limit: int) -> MetricNames:
        self._window(window)
        return names_doc(await self._store.metric_names(project_id, window, limit + 1), limit)

    async def services(
        self, project_id: str, window: TimeRange, metric_name: str | None, limit: int
    ) -> MetricServices:
        self._window(window)
        found = await self._store.service_names(project_id, window, metric_name, limit + 1)
        return services_doc(metric_name, found, limit)

    async def tags(
        self, project_id: str, metric_name: str, window: TimeRange, limit: int
    ) -> MetricTags:
        self._window(window)
        found = await self._store.tag_values(project_id, metric_name, window, limit + 1)
        return tags_doc(metric_name, found, limit)

    async def histogram(self, query: HistogramQuery) -> bytes:
        return to_json(histogram_doc(await self.histogram_of(query)))

    async def histogram_of(self, query: HistogramQuery) -> Histogram:
        self._window(query.window)
        if not 1 <= query.bins <= self._limits.max_histogram_bins:
            raise LimitExceeded("bins", f"between 1 and {self._limits.max_histogram_bins}")
        return await self._store.histogram(query)

    async def anomalies(self, query: AnomalyQuery) -> MetricAnomalies:
        points = await self._bucketed(query)
        return anomalies_doc(query, len(points), await self._detect(query, points))

    async def find_anomalies(self, query: AnomalyQuery) -> tuple[Anomaly, ...]:
        """The buckets that stand out, oldest first (what `anomalies` renders)."""
        return await self._detect(query, await self._bucketed(query))

    async def _bucketed(self, query: AnomalyQuery) -> list[DataPoint]:
        """Bucket the series (avg per bucket): what the analyzer looks at."""
        self._window(query.window, query.bucketing)
        if not 0 < query.threshold <= 1:
            raise ValidationError("threshold", "a score, greater than 0 and at most 1")
        averages = MetricQuery(query.project_id, query.series, query.window, Aggregation.AVG,
                               query.bucketing)
        (found,) = await self._store.query([averages])
        return [DataPoint(p.bucket, p.value) for p in found.points]

    async def _detect(self, query: AnomalyQuery, points: list[DataPoint]) -> tuple[Anomaly, ...]:
        if not points:
            return ()
        request = AnomalyRequest(query.series.name, points, query.method, query.threshold)
        return (await self._analyzer.detect_anomalies(request)).anomalies
