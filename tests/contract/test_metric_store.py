"""MetricStore contract: the in-memory reference and PostgreSQL give the same answers.

Expected values are computed here from the raw points with the domain's reference
(`domain.metrics.aggregate`, `Bucketing.floor`, `bin_index`), not read back from a store.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest

from opspilot.domain.errors import LimitExceeded
from opspilot.domain.ingest import MetricBatch
from opspilot.domain.labels import (
    LabelMatcher,
    Labels,
    MatchOp,
    SampleLimits,
    SampleSeries,
    SeriesSelection,
    labels_of,
    matches_all,
    millis,
)
from opspilot.domain.metrics import (
    MAX_ABS_VALUE,
    Aggregation,
    HistogramQuery,
    MetricMetadata,
    MetricPoint,
    MetricQuery,
    MetricType,
    SeriesSelector,
    aggregate,
    bin_index,
)
from opspilot.domain.ports import WindowRequest
from opspilot.domain.timewindow import Bucketing, TimeRange
from tests.contract.conftest import COMPACT_ALL_BEFORE

T0 = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
A, B = "project-a", "project-b"
DAY = TimeRange(T0 - timedelta(hours=12), T0 + timedelta(hours=12))


def batch(message_id: str, points: Sequence[MetricPoint]) -> MetricBatch:
    return MetricBatch(message_id, points[0].project_id if points else A, T0, list(points))


def dataset(seed: int = 7) -> list[MetricPoint]:
    """Three hours of two series in project A, with services, tags and odd microseconds."""
    rng = random.Random(seed)
    points = []
    for _ in range(1_000):
        at = T0 + timedelta(seconds=rng.uniform(0, 3 * 3600))
        service = rng.choice(["api", "db", None])
        tags = rng.choice([{}, {"region": "eu"}, {"region": "us", "tier": "gold"}])
        points.append(MetricPoint(A, at, "latency", round(rng.lognormvariate(3, 1), 3),
                                  service, tags))
        points.append(MetricPoint(A, at, "errors", float(rng.randint(0, 5)), service, tags))
    return points


def expected(points: Sequence[MetricPoint], query: MetricQuery) -> list[tuple[datetime, float,
                                                                              int]]:
    buckets: dict[datetime, list[float]] = defaultdict(list)
    for p in points:
        s = query.series
        if (p.project_id == query.project_id and p.name == s.name
                and query.window.contains(p.timestamp)
                and (s.service is None or p.service == s.service)
                and all(p.tags.get(k) == v for k, v in s.tags.items())):
            buckets[query.bucketing.floor(p.timestamp)].append(p.value)
    return [(b, aggregate(v, query.aggregation), len(v)) for b, v in sorted(buckets.items())]


def as_tuples(series: Any) -> list[tuple[datetime, float, int]]:
    return [(p.bucket, p.value, p.count) for p in series.points]


def assert_same(actual: list[tuple[datetime, float, int]],
                wanted: list[tuple[datetime, float, int]]) -> None:
    assert [(b, n) for b, _, n in actual] == [(b, n) for b, _, n in wanted]
    assert [v for _, v, _ in actual] == pytest.approx([v for _, v, _ in wanted], rel=1e-9)


def query(series: SeriesSelector, aggregation: Aggregation = Aggregation.AVG,
          bucket: str = "5m", window: TimeRange = DAY, project: str = A) -> MetricQuery:
    return MetricQuery(project, series, window, aggregation, Bucketing.parse(bucket))


@pytest.fixture
async def loaded(metric_store: Any) -> tuple[Any, list[MetricPoint]]:
    points = dataset()
    written = await metric_store.write_batches(
        [batch("m-1", points[:1000]), batch("m-2", points[1000:])]
    )
    assert written == len(points)
    return metric_store, points


@pytest.mark.parametrize("aggregation", [a for a in Aggregation if not a.on_counters])
@pytest.mark.parametrize("bucket", ["1m", "15m", "1h"])
async def test_every_aggregation_matches_the_reference(
    loaded: tuple[Any, list[MetricPoint]], aggregation: Aggregation, bucket: str
) -> None:
    store, points = loaded
    q = query(SeriesSelector("latency"), aggregation, bucket)
    [series] = await store.query([q])
    assert (series.name, series.service, series.aggregation, series.bucket) == (
        "latency", None, aggregation, bucket)
    assert len(series.points) > 2
    assert_same(as_tuples(series), expected(points, q))


async def test_percentiles_are_exact_on_known_values(metric_store: Any) -> None:
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    points = [MetricPoint(A, T0 + timedelta(seconds=i), "x", v) for i, v in enumerate(values)]
    await metric_store.write_batches([batch("m", points)])
    found = {}
    for aggregation in Aggregation:
        [series] = await metric_store.query([query(SeriesSelector("x"), aggregation, "1h")])
        found[aggregation] = series.points[0].value
    assert found == {
        Aggregation.AVG: 4.0, Aggregation.SUM: 20.0, Aggregation.MIN: 1.0,
        Aggregation.MAX: 10.0, Aggregation.COUNT: 5.0, Aggregation.P50: 3.0,
        Aggregation.P90: pytest.approx(7.6), Aggregation.P95: pytest.approx(8.8),
        Aggregation.P99: pytest.approx(9.76),
        # as a counter: 1→2→3→4→10 grew by 9 in the hour's bucket
        Aggregation.INCREASE: 9.0, Aggregation.RATE: pytest.approx(9.0 / 3600),
    }


async def test_buckets_are_aligned_to_the_unix_epoch_whatever_the_window_offset(
    metric_store: Any,
) -> None:
    ist = timezone(timedelta(hours=5, minutes=30))
    points = [MetricPoint(A, T0 + timedelta(minutes=7 * i), "x", float(i)) for i in range(40)]
    await metric_store.write_batches([batch("m", points)])
    window = TimeRange(datetime(2024, 3, 1, 15, 31, 17, tzinfo=ist),
                       datetime(2024, 3, 1, 19, 2, tzinfo=ist))
    for bucket in ("1h", "90m", "7m"):
        q = query(SeriesSelector("x"), Aggregation.COUNT, bucket, window)
        [series] = await metric_store.query([q])
        width = Bucketing.parse(bucket).width.total_seconds()
        assert series.points, bucket
        assert all(p.bucket.timestamp() % width == 0 for p in series.points)
        assert all(p.bucket.utcoffset() == timedelta(0) for p in series.points)
        assert as_tuples(series) == expected(points, q)
        if bucket == "1h":
            # the first bucket starts before the window but counts only points inside it
            assert series.points[0].bucket == datetime(2024, 3, 1, 10, tzinfo=UTC)
            assert series.points[0].count == 8  # 10:07 … 10:56, not 10:00


async def test_service_and_tag_filters(loaded: tuple[Any, list[MetricPoint]]) -> None:
    store, points = loaded
    selectors = [
        SeriesSelector("latency", "api"),
        SeriesSelector("latency", None, {"region": "us"}),
        SeriesSelector("latency", "db", {"region": "us", "tier": "gold"}),
        SeriesSelector("latency", "db", {"region": "mars"}),
        SeriesSelector("latency", "nobody"),
    ]
    queries = [query(s, Aggregation.SUM, "30m") for s in selectors]
    results = await store.query(queries)
    for q, series in zip(queries, results, strict=True):
        assert series.service == q.series.service
        assert_same(as_tuples(series), expected(points, q))
    assert results[0].points and results[1].points and results[2].points
    assert results[3].points == [] and results[4].points == []


async def test_window_is_half_open(metric_store: Any) -> None:
    start, end = T0, T0 + timedelta(minutes=10)
    points = [
        MetricPoint(A, start - timedelta(microseconds=1), "x", 1.0),
        MetricPoint(A, start, "x", 2.0),
        MetricPoint(A, end - timedelta(microseconds=1), "x", 4.0),
        MetricPoint(A, end, "x", 8.0),
    ]
    await metric_store.write_batches([batch("m", points)])
    window = TimeRange(start, end)
    [series] = await metric_store.query([query(SeriesSelector("x"), Aggregation.SUM, "1h",
                                               window)])
    assert as_tuples(series) == [(T0, 6.0, 2)]
    [value] = await metric_store.aggregate_windows(
        [WindowRequest(A, SeriesSelector("x"), Aggregation.SUM, window)])
    assert (value.value, value.count) == (6.0, 2)
    histogram = await metric_store.histogram(HistogramQuery(A, SeriesSelector("x"), window, 2))
    assert (histogram.total, histogram.min, histogram.max) == (2, 2.0, 4.0)


async def test_several_series_in_one_call_keep_their_order(
    loaded: tuple[Any, list[MetricPoint]],
) -> None:
    store, points = loaded
    queries = [
        query(SeriesSelector("errors"), Aggregation.MAX, "1h"),
        query(SeriesSelector("missing"), Aggregation.AVG, "1m"),
        query(SeriesSelector("latency", "api"), Aggregation.P95, "10m"),
        query(SeriesSelector("latency"), Aggregation.COUNT, "1h", project=B),
        query(SeriesSelector("latency"), Aggregation.P50, "2h"),
        query(SeriesSelector("errors"), Aggregation.MAX, "1h"),
    ]
    results = await store.query(queries)
    assert [(s.name, s.aggregation, s.bucket) for s in results] == [
        (q.series.name, q.aggregation, q.bucketing.label) for q in queries
    ]
    for q, series in zip(queries, results, strict=True):
        assert_same(as_tuples(series), expected(points, q))
    assert results[1].points == [] and results[3].points == []
    assert results[0] == results[5]
    assert await store.query([]) == []


async def test_histogram_bins_and_counts(loaded: tuple[Any, list[MetricPoint]]) -> None:
    store, points = loaded
    for selector, bins in [(SeriesSelector("latency"), 20), (SeriesSelector("errors", "api"), 7),
                           (SeriesSelector("latency", None, {"region": "eu"}), 1)]:
        values = [p.value for p in points if p.name == selector.name
                  and (selector.service is None or p.service == selector.service)
                  and all(p.tags.get(k) == v for k, v in selector.tags.items())]
        low, high = min(values), max(values)
        counts = [0] * bins
        for v in values:
            counts[bin_index(v, low, high, bins)] += 1
        histogram = await store.histogram(HistogramQuery(A, selector, DAY, bins))
        assert histogram.name == selector.name
        assert (histogram.total, histogram.min, histogram.max) == (len(values), low, high)
        assert [b.count for b in histogram.bins] == counts
        assert histogram.bins[0].lower == low and histogram.bins[-1].upper == pytest.approx(high)
        assert sum(counts) == len(values)


async def test_histogram_puts_the_maximum_in_the_last_bin_and_handles_flat_series(
    metric_store: Any,
) -> None:
    points = [MetricPoint(A, T0 + timedelta(seconds=i), "x", float(v))
              for i, v in enumerate([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])]
    points += [MetricPoint(A, T0 + timedelta(seconds=i), "flat", 3.0) for i in range(4)]
    await metric_store.write_batches([batch("m", points)])
    histogram = await metric_store.histogram(HistogramQuery(A, SeriesSelector("x"), DAY, 5))
    assert [b.count for b in histogram.bins] == [2, 2, 2, 2, 3]
    assert [(b.lower, b.upper) for b in histogram.bins] == [
        (0.0, 2.0), (2.0, 4.0), (4.0, 6.0), (6.0, 8.0), (8.0, 10.0)]
    flat = await metric_store.histogram(HistogramQuery(A, SeriesSelector("flat"), DAY, 3))
    assert [b.count for b in flat.bins] == [4, 0, 0]
    assert (flat.min, flat.max, flat.total) == (3.0, 3.0, 4)
    empty = await metric_store.histogram(HistogramQuery(A, SeriesSelector("none"), DAY, 3))
    assert (list(empty.bins), empty.total, empty.min, empty.max) == ([], 0, None, None)


async def test_aggregate_windows_in_order_with_empty_windows(
    loaded: tuple[Any, list[MetricPoint]],
) -> None:
    store, points = loaded
    requests = []
    # (increase and rate over windows: test_counter_growth_per_series_with_resets_and_lookback)
    gauges = [a for a in Aggregation if not a.on_counters]
    for i, aggregation in enumerate(gauges * 3):
        start = T0 + timedelta(minutes=17 * i)
        requests.append(WindowRequest(
            A, SeriesSelector("latency", ["api", None, "db"][i % 3]), aggregation,
            TimeRange(start, start + timedelta(minutes=5 + i))))
    requests.append(WindowRequest(A, SeriesSelector("latency"), Aggregation.COUNT,
                                  TimeRange(T0 - timedelta(days=2), T0 - timedelta(days=1))))
    requests.append(WindowRequest(B, SeriesSelector("latency"), Aggregation.AVG, DAY))
    results = await store.aggregate_windows(requests)
    assert len(results) == len(requests)
    for request, result in zip(requests, results, strict=True):
        q = MetricQuery(request.project_id, request.series, request.window,
                        request.aggregation, Bucketing(timedelta(days=36500)))
        rows = expected(points, q)
        if not rows:
            assert (result.value, result.count) == (None, 0)
        else:
            [(_, value, count)] = rows
            assert result.count == count and result.value == pytest.approx(value, rel=1e-9)
    assert results[-1].value is None and results[-2].value is None
    assert await store.aggregate_windows([]) == []


async def test_aggregate_windows_at_alert_engine_scale(metric_store: Any) -> None:
    points = [MetricPoint(A, T0 + timedelta(minutes=i), f"s{i % 3}", float(i))
              for i in range(60)]
    await metric_store.write_batches([batch("m", points)])
    requests = [WindowRequest(A, SeriesSelector(f"s{i % 4}"), Aggregation.MAX,
                              TimeRange(T0, T0 + timedelta(minutes=1 + i % 60)))
                for i in range(6_000)]
    results = await metric_store.aggregate_windows(requests)
    for i in (0, 1, 2, 3, 4_999, 5_000, 5_001, 5_999):
        name, minutes = i % 4, 1 + i % 60
        inside = [float(m) for m in range(minutes) if m % 3 == name]
        assert results[i].count == len(inside)
        assert results[i].value == (max(inside) if inside else None)


async def test_empty_store_answers_empty(metric_store: Any) -> None:
    [series] = await metric_store.query([query(SeriesSelector("x"))])
    assert series.points == []
    [value] = await metric_store.aggregate_windows(
        [WindowRequest(A, SeriesSelector("x"), Aggregation.COUNT, DAY)])
    assert (value.value, value.count) == (None, 0)
    assert await metric_store.write_batches([]) == 0
    await metric_store.ping()


async def count_of(store: Any, project: str, name: str) -> int:
    [value] = await store.aggregate_windows(
        [WindowRequest(project, SeriesSelector(name), Aggregation.COUNT,
                       TimeRange(T0 - timedelta(days=3650), T0 + timedelta(days=3650)))])
    return int(value.count)


async def test_redelivered_batch_writes_nothing(metric_store: Any) -> None:
    points = [MetricPoint(A, T0 + timedelta(seconds=i), "x", float(i)) for i in range(10)]
    assert await metric_store.write_batches([batch("m-1", points)]) == 10
    assert await metric_store.write_batches([batch("m-1", points)]) == 0
    assert await count_of(metric_store, A, "x") == 10
    more = [MetricPoint(A, T0 + timedelta(minutes=1, seconds=i), "x", 1.0) for i in range(3)]
    # one known and one new batch, and the new one twice in the same call
    assert await metric_store.write_batches(
        [batch("m-1", points), batch("m-2", more), batch("m-2", more)]) == 3
    assert await count_of(metric_store, A, "x") == 13
    assert await metric_store.write_batches([batch("m-2", more)]) == 0
    assert await count_of(metric_store, A, "x") == 13


async def test_far_off_timestamps_are_stored(metric_store: Any) -> None:
    moments = [datetime(1999, 12, 31, 23, 59, tzinfo=UTC), datetime(2099, 1, 1, tzinfo=UTC)]
    points = [MetricPoint(A, m, "x", 1.0) for m in moments]
    assert await metric_store.write_batches([batch("m", points)]) == 2
    for m in moments:
        [series] = await metric_store.query([query(
            SeriesSelector("x"), Aggregation.COUNT, "1d",
            TimeRange(m - timedelta(days=1), m + timedelta(days=1)))])
        assert [p.count for p in series.points] == [1]


async def test_project_b_never_sees_project_a(loaded: tuple[Any, list[MetricPoint]]) -> None:
    store, _ = loaded
    for aggregation in Aggregation:
        [series] = await store.query([query(SeriesSelector("latency"), aggregation, project=B)])
        assert series.points == []
    histogram = await store.histogram(HistogramQuery(B, SeriesSelector("latency"), DAY, 10))
    assert histogram.total == 0 and list(histogram.bins) == []
    [value] = await store.aggregate_windows(
        [WindowRequest(B, SeriesSelector("latency"), Aggregation.COUNT, DAY)])
    assert (value.value, value.count) == (None, 0)
    # B's own points stay B's
    mine = [MetricPoint(B, T0, "latency", 42.0)]
    await store.write_batches([batch("m-b", mine)])
    [series] = await store.query([query(SeriesSelector("latency"), Aggregation.MAX,
                                        project=B)])
    assert [(p.value, p.count) for p in series.points] == [(42.0, 1)]


# -- retention -----------------------------------------------------------------------------


async def test_drop_before_removes_whole_days_before_the_cutoff_day_and_keeps_the_rest(
    metric_store: Any,
) -> None:
    """Cutoff 29 Feb 06:00: 27 and 28 Feb are gone for every project; 29 Feb (the cutoff's
    day, before and after the cutoff) and 1 March stay."""
    at = {
        "27 Feb": datetime(2024, 2, 27, 23, 59, 59, tzinfo=UTC),
        "28 Feb": datetime(2024, 2, 28, 12, tzinfo=UTC),
        "29 Feb early": datetime(2024, 2, 29, 0, 0, tzinfo=UTC),
        "29 Feb late": datetime(2024, 2, 29, 6, 0, tzinfo=UTC),
        "1 Mar": T0,
    }
    points = [MetricPoint(p, ts, "cpu", float(i)) for i, ts in enumerate(at.values())
              for p in (A, B)]
    await metric_store.write_batches([batch("retention", points)])
    cutoff = datetime(2024, 2, 29, 6, 0, tzinfo=UTC)

    dropped = await metric_store.drop_before(cutoff)

    assert dropped, "names what it dropped"
    everything = TimeRange(datetime(2024, 2, 20, tzinfo=UTC), T0 + timedelta(days=1))
    for project in (A, B):
        (series,) = await metric_store.query([MetricQuery(
            project, SeriesSelector("cpu"), everything, Aggregation.COUNT, Bucketing.parse("1h"))])
        assert list(series.buckets) == [at["29 Feb early"], at["29 Feb late"], at["1 Mar"]]
    assert await metric_store.drop_before(cutoff) == []  # nothing left to drop: idempotent


async def test_values_at_the_bound_aggregate_without_overflow(metric_store: Any) -> None:
    """The ingest bound (±MAX_ABS_VALUE) keeps sums, averages and histogram widths finite
    on every store (PostgreSQL raises on float8 overflow)."""
    values = [MAX_ABS_VALUE, MAX_ABS_VALUE, -MAX_ABS_VALUE]
    points = [MetricPoint(A, T0 + timedelta(seconds=i), "big", v) for i, v in enumerate(values)]
    await metric_store.write_batches([batch("bound", points)])
    window = TimeRange(T0, T0 + timedelta(hours=1))
    for aggregation, expected in ((Aggregation.SUM, MAX_ABS_VALUE),
                                  (Aggregation.AVG, MAX_ABS_VALUE / 3),
                                  (Aggregation.MAX, MAX_ABS_VALUE)):
        (series,) = await metric_store.query([MetricQuery(
            A, SeriesSelector("big"), window, aggregation, Bucketing.parse("1h"))])
        assert list(series.values) == [pytest.approx(expected)]
    histogram = await metric_store.histogram(HistogramQuery(A, SeriesSelector("big"), window, 4))
    assert [b.count for b in histogram.bins] == [1, 0, 0, 2]


# -- discovery: the explorer's pickers ----------------------------------------------------


async def test_discovery_lists_what_has_points_in_the_window(
    loaded: tuple[Any, list[MetricPoint]],
) -> None:
    store, points = loaded
    extra = [MetricPoint(A, T0 - timedelta(days=2), "old_metric", 1.0, "legacy", {"zone": "z"}),
             MetricPoint(B, T0, "b_only", 1.0, "b_service", {"secret": "b"}),
             MetricPoint(A, T0, "Zeta", 1.0, "api", {"region": "eu", "a": "1"})]
    await store.write_batches([batch("x-1", extra[:1]), batch("x-2", extra[1:2]),
                               batch("x-3", extra[2:])])
    assert await store.metric_names(A, DAY, 100) == ["Zeta", "errors", "latency"]
    assert await store.metric_names(A, DAY, 2) == ["Zeta", "errors"]
    assert await store.metric_names(B, DAY, 100) == ["b_only"]
    assert await store.service_names(A, DAY, None, 100) == ["api", "db"]
    assert await store.service_names(A, DAY, "errors", 100) == ["api", "db"]
    assert await store.service_names(A, DAY, "Zeta", 100) == ["api"]
    assert await store.service_names(A, DAY, "missing", 100) == []
    assert await store.service_names(B, DAY, None, 1) == ["b_service"]
    wanted = sorted({(k, v) for p in points if p.name == "latency" for k, v in p.tags.items()})
    assert await store.tag_values(A, "latency", DAY, 100) == {
        "region": sorted({v for k, v in wanted if k == "region"}),
        "tier": ["gold"]}
    assert await store.tag_values(A, "latency", DAY, 1) == {"region": ["eu"]}
    assert await store.tag_values(A, "Zeta", DAY, 100) == {"a": ["1"], "region": ["eu"]}
    assert await store.tag_values(B, "latency", DAY, 100) == {}
    old = TimeRange(T0 - timedelta(days=3), T0 - timedelta(days=1))
    assert await store.metric_names(A, old, 100) == ["old_metric"]
    assert await store.tag_values(A, "old_metric", old, 100) == {"zone": ["z"]}
    # the window is half-open, like every read
    at = TimeRange(T0 - timedelta(days=2) + timedelta(microseconds=1), T0)
    assert await store.metric_names(A, at, 100) == []


# -- what the store refuses (issue #15) ----------------------------------------------------


@pytest.mark.parametrize("bad", [
    MetricPoint(A, T0, "m", 1.0, "svc\x00"),
    MetricPoint(A, T0, "m", 1.0, None, {"k\x00": "v"}),
    MetricPoint(A, T0, "m", 1.0, None, {"k": "v\x00"}),
    MetricPoint(A, T0, "m", 1.0, "\ud800"),
])
async def test_unstorable_text_refuses_the_whole_call_with_records_rejected(
    metric_store: Any, bad: MetricPoint
) -> None:
    """RecordsRejected (never a transient error, nor a partial write): the worker bisects on
    it. Both stores refuse the same values, so the worker behaves the same on both."""
    from opspilot.domain.errors import RecordsRejected, TransientStoreError

    good = [MetricPoint(A, T0, "m", 2.0, "svc")]
    with pytest.raises(RecordsRejected) as refused:
        await metric_store.write_batches([batch("ok", good), batch("bad", [*good, bad])])
    assert not isinstance(refused.value, TransientStoreError)
    assert await metric_store.write_batches([batch("ok", good)]) == 1  # nothing was kept
    window = [WindowRequest(A, SeriesSelector("m"), Aggregation.COUNT, DAY)]
    assert (await metric_store.aggregate_windows(window))[0].count == 1


# -- Prometheus series: select_samples / select_labels --------------------------------------


def _selection(*matchers: tuple[str, str, str], start: datetime = T0 - timedelta(hours=1),
               end: datetime = T0 + timedelta(hours=4), project: str = A,
               limits: SampleLimits = SampleLimits()) -> SeriesSelection:
    return SeriesSelection(project, [LabelMatcher(n, MatchOp(op), v) for n, op, v in matchers],
                           millis(start), millis(end), limits)


def reference_samples(points: Sequence[MetricPoint], selection: SeriesSelection
                      ) -> dict[Labels, list[tuple[int, float]]]:
    """What select_samples must return, from the raw points: the last write of a millisecond
    wins, both window ends are inside."""
    found: dict[Labels, dict[int, float]] = defaultdict(dict)
    for p in points:
        labels = labels_of(p.name, p.service, p.tags)
        ms = millis(p.timestamp)
        if (p.project_id == selection.project_id
                and selection.start_ms <= ms <= selection.end_ms
                and matches_all(dict(labels), selection.matchers)):
            found[labels][ms] = p.value
    return {k: sorted(v.items()) for k, v in found.items()}


def as_mapping(series: Sequence[SampleSeries]) -> dict[Labels, list[tuple[int, float]]]:
    assert [s.labels for s in series] == sorted(s.labels for s in series), "sorted by labels"
    return {s.labels: list(zip(s.timestamps, s.values, strict=True)) for s in series}


SELECTIONS = [
    (("__name__", "=", "latency"),),
    (("__name__", "=", "latency"), ("service", "=", "api")),
    (("__name__", "=", "latency"), ("service", "=", "")),
    (("__name__", "=", "latency"), ("service", "!=", "")),
    (("__name__", "=~", "lat.*|err.*"), ("region", "!=", "eu")),
    (("__name__", "=~", "lat"),),
    (("__name__", "!~", "lat.*"), ("region", "=~", "us|")),
    (("region", "=~", ".+"), ("tier", "!~", "gold")),
    (("service", "=~", "(?i)API"),),
    (("__name__", "=", "errors"), ("tier", "=", "gold"), ("region", "=", "us")),
]


@pytest.mark.parametrize("matchers", SELECTIONS, ids=lambda m: ",".join("".join(x) for x in m))
async def test_select_samples_matches_the_reference(
    loaded: tuple[Any, list[MetricPoint]], matchers: tuple[tuple[str, str, str], ...]
) -> None:
    store, points = loaded
    selection = _selection(*matchers, start=T0 + timedelta(minutes=30),
                           end=T0 + timedelta(hours=2))
    wanted = reference_samples(points, selection)
    anchored = matchers == (("__name__", "=~", "lat"),)  # must not match "latency"
    assert bool(wanted) != anchored
    assert as_mapping(await store.select_samples(selection)) == wanted
    assert await store.select_labels(selection) == sorted(wanted)


async def test_select_samples_is_scoped_to_the_project(
    loaded: tuple[Any, list[MetricPoint]]
) -> None:
    store, _ = loaded
    selection = _selection(("__name__", "=~", ".+"), project=B)
    assert await store.select_samples(selection) == []
    assert await store.select_labels(selection) == []


async def test_select_window_includes_both_ends_by_the_millisecond(metric_store: Any) -> None:
    at = [T0, T0 + timedelta(seconds=10, microseconds=999), T0 + timedelta(seconds=20)]
    await metric_store.write_batches([batch("m", [MetricPoint(A, t, "x", float(i))
                                                  for i, t in enumerate(at)])])
    [series] = await metric_store.select_samples(
        _selection(("__name__", "=", "x"), start=T0, end=T0 + timedelta(seconds=10)))
    assert list(series.timestamps) == [millis(T0), millis(T0) + 10_000]
    assert list(series.values) == [0.0, 1.0]
    assert series.labels == (("__name__", "x"),)


async def test_a_later_write_of_the_same_millisecond_wins(metric_store: Any) -> None:
    first = MetricPoint(A, T0, "x", 1.0, "api", {"k": "v"})
    second = MetricPoint(A, T0 + timedelta(microseconds=300), "x", 2.0, "api", {"k": "v"})
    await metric_store.write_batches([batch("m1", [first])])
    await metric_store.write_batches([batch("m2", [second])])
    [series] = await metric_store.select_samples(_selection(("__name__", "=", "x")))
    assert (list(series.timestamps), list(series.values)) == ([millis(T0)], [2.0])
    assert series.labels == (("__name__", "x"), ("k", "v"), ("service", "api"))


async def test_remote_written_series_keep_their_labels(metric_store: Any) -> None:
    """Remote-write keeps every label as a tag and takes the service from `service`, else
    from `job` (docs/otlp.md): the series goes out with the labels it came in with."""
    points = [MetricPoint(A, T0, "up", 1.0, "node", {"job": "node", "instance": "h:9100"}),
              MetricPoint(A, T0, "up", 2.0, "api", {"job": "web", "service": "api"}),
              MetricPoint(A, T0, "up", 3.0, "db", {"job": "db", "service": "db"}),
              MetricPoint(A, T0, "up", 4.0, "db", {"job": "batch"})]
    await metric_store.write_batches([batch("rw", points)])
    everything = await metric_store.select_samples(_selection(("__name__", "=", "up")))
    assert {s.labels: list(s.values) for s in everything} == {
        (("__name__", "up"), ("instance", "h:9100"), ("job", "node")): [1.0],
        (("__name__", "up"), ("job", "web"), ("service", "api")): [2.0],
        (("__name__", "up"), ("job", "db"), ("service", "db")): [3.0],
        (("__name__", "up"), ("job", "batch"), ("service", "db")): [4.0],
    }
    no_service = await metric_store.select_labels(_selection(("__name__", "=", "up"),
                                                             ("service", "=", "")))
    assert no_service == [(("__name__", "up"), ("instance", "h:9100"), ("job", "node"))]
    db = await metric_store.select_labels(_selection(("service", "=~", "d.*|node")))
    assert [dict(labels)["job"] for labels in db] == ["batch", "db"]


async def test_samples_come_in_time_order_whatever_the_write_order(metric_store: Any) -> None:
    at = [T0 + timedelta(seconds=s) for s in (50, 10, 30, 10, 40, 20)]
    for i, t in enumerate(at):  # one write each: 10 s is written twice, 4.0 last
        await metric_store.write_batches([batch(f"m{i}", [MetricPoint(A, t, "x", float(i))])])
    [series] = await metric_store.select_samples(_selection(("__name__", "=", "x")))
    assert [(t - millis(T0)) // 1000 for t in series.timestamps] == [10, 20, 30, 40, 50]
    assert list(series.values) == [3.0, 5.0, 2.0, 4.0, 0.0]


async def test_select_refuses_past_its_limits(loaded: tuple[Any, list[MetricPoint]]) -> None:
    store, points = loaded
    everything = (("__name__", "=~", ".+"),)
    total = sum(len(v) for v in reference_samples(points, _selection(*everything)).values())
    assert len(await store.select_labels(_selection(*everything))) == 18
    with pytest.raises(LimitExceeded, match="too many samples"):
        await store.select_samples(_selection(*everything, limits=SampleLimits(total - 1, 100)))
    with pytest.raises(LimitExceeded, match="more than 17 series"):
        await store.select_samples(_selection(*everything, limits=SampleLimits(total, 17)))
    with pytest.raises(LimitExceeded, match="more than 17 series"):
        await store.select_labels(_selection(*everything, limits=SampleLimits(total, 17)))
    assert len(await store.select_samples(_selection(*everything,
                                                     limits=SampleLimits(total, 18)))) == 18

# -- counters: increase / rate (resets, lookback, per series) and histogram buckets ----------


def counter_points() -> list[MetricPoint]:
    """Two counter series of `reqs` (service api, tags a/b) sampled every 30 s from T0-4m
    for 30 min, with a reset in series b at T0+10m, plus a third series in another
    service; cumulative values."""
    points = []
    for i in range(68):
        at = T0 - timedelta(minutes=4) + timedelta(seconds=30 * i)
        points.append(MetricPoint(A, at, "reqs", float(3 * i), "api", {"k": "a"}))
        b = float(5 * i) if at < T0 + timedelta(minutes=10) else float(i - 27)
        points.append(MetricPoint(A, at, "reqs", b, "api", {"k": "b"}))
        points.append(MetricPoint(A, at, "reqs", float(100 + i), "db", {}))
    return points


def expected_growth(points: Sequence[MetricPoint], q: MetricQuery) -> list[tuple[datetime, float, int]]:
    from opspilot.domain.metrics import COUNTER_LOOKBACK, counter_increases

    series: dict[Any, list[tuple[datetime, float]]] = defaultdict(list)
    for p in points:
        s = q.series
        if (p.project_id == q.project_id and p.name == s.name
                and q.window.start - COUNTER_LOOKBACK <= p.timestamp < q.window.end
                and (s.service is None or p.service == s.service)
                and all(p.tags.get(k) == v for k, v in s.tags.items())):
            series[(p.service, tuple(sorted(p.tags.items())))].append((p.timestamp, p.value))
    buckets: dict[datetime, list[float]] = defaultdict(list)
    for samples in series.values():
        for at, grown in counter_increases(sorted(samples), q.window.start):
            buckets[q.bucketing.floor(at)].append(grown)
    per = q.bucketing.width.total_seconds() if q.aggregation is Aggregation.RATE else 1.0
    return [(b, sum(g) / per, len(g)) for b, g in sorted(buckets.items())]


@pytest.mark.parametrize("aggregation", [Aggregation.INCREASE, Aggregation.RATE])
@pytest.mark.parametrize("selector", [SeriesSelector("reqs"), SeriesSelector("reqs", "api"),
                                      SeriesSelector("reqs", None, {"k": "b"})])
async def test_counter_growth_per_series_with_resets_and_lookback(
    metric_store: Any, aggregation: Aggregation, selector: SeriesSelector
) -> None:
    points = counter_points()
    await metric_store.write_batches([batch("c", points)])
    q = MetricQuery(A, selector, TimeRange(T0, T0 + timedelta(minutes=30)), aggregation,
                    Bucketing.parse("5m"))
    [series] = await metric_store.query([q])
    wanted = expected_growth(points, q)
    assert len(wanted) == 6
    assert_same(as_tuples(series), wanted)
    if selector.tags == {"k": "b"} and aggregation is Aggregation.INCREASE:
        # 10 samples a bucket, 5 each (first bucket: the lookback sample's growth too);
        # the reset bucket grows by 5*k up to the reset, then the new counter's values
        assert [v for _, v, _ in as_tuples(series)][0] == 50.0
    [window] = await metric_store.aggregate_windows(
        [WindowRequest(A, selector, aggregation, q.window)])
    total = sum(v for _, v, _ in expected_growth(
        points, MetricQuery(A, selector, q.window, Aggregation.INCREASE, Bucketing.parse("1d"))))
    span = q.window.span.total_seconds() if aggregation is Aggregation.RATE else 1.0
    assert window.value == pytest.approx(total / span)


async def test_bucket_increases_read_histogram_buckets(metric_store: Any) -> None:
    points = []
    for step in range(3):
        at = T0 + timedelta(minutes=step)
        for le, count in (("1", 2 * step), ("5", 5 * step), ("+Inf", 6 * step)):
            for service in ("api", "db"):
                points.append(MetricPoint(A, at, "lat_bucket", float(count), service, {"le": le}))
        points.append(MetricPoint(B, at, "lat_bucket", 99.0 * step, "api", {"le": "1"}))
    await metric_store.write_batches([batch("h", points)])
    q = MetricQuery(A, SeriesSelector("lat_bucket"), TimeRange(T0, T0 + timedelta(hours=1)),
                    Aggregation.P95, Bucketing.parse("1h"))
    found = await metric_store.bucket_increases(q)
    assert sorted(found) == ["+Inf", "1", "5"]
    assert {le: as_tuples(s) for le, s in found.items()} == {
        "1": [(T0, 8.0, 4)], "5": [(T0, 20.0, 4)], "+Inf": [(T0, 24.0, 4)]}
    only_api = await metric_store.bucket_increases(
        MetricQuery(A, SeriesSelector("lat_bucket", "api"), q.window, q.aggregation,
                    q.bucketing))
    assert as_tuples(only_api["5"]) == [(T0, 10.0, 2)]
    assert await metric_store.bucket_increases(
        MetricQuery(B, SeriesSelector("lat_bucket"), q.window, q.aggregation, q.bucketing)
    ) == {"1": found["1"].__class__("lat_bucket", None, Aggregation.INCREASE, "1h",
                                           [T0], [198.0], [2])}


async def test_delta_series_count_every_sample_as_growth(metric_store: Any) -> None:
    """A series tagged `__temporality__: delta` (OTLP delta sums and histograms) holds
    growths: each sample in the window is its own, the first included, a lower value is
    no reset, and the lookback sample adds nothing. Beside it, a cumulative series of the
    same name keeps the counter reading; `increase` sums both, and the bucket counters of
    a delta histogram give per-`le` increases the same way."""
    delta = {"__temporality__": "delta"}
    points = []
    for i, value in enumerate([7.0, 4.0, 1.0, 6.0, 2.0]):  # T0-1m (lookback), T0 … T0+3m
        at = T0 + timedelta(minutes=i - 1)
        points.append(MetricPoint(A, at, "reqs", value, "api", delta))
        points.append(MetricPoint(A, at, "reqs", 10.0 * i, "api", {}))  # cumulative 0..40
        for le, count in (("1", value - 1), ("+Inf", value)):
            points.append(MetricPoint(A, at, "lat_bucket", count, "api", {**delta, "le": le}))
    await metric_store.write_batches([batch("d", points)])
    window = TimeRange(T0, T0 + timedelta(minutes=4))
    q = MetricQuery(A, SeriesSelector("reqs", None, delta), window, Aggregation.INCREASE,
                    Bucketing.parse("2m"))
    [series] = await metric_store.query([q])
    assert as_tuples(series) == [(T0, 5.0, 2), (T0 + timedelta(minutes=2), 8.0, 2)]
    [both] = await metric_store.query([attrs.evolve(q, series=SeriesSelector("reqs"))])
    assert as_tuples(both) == [(T0, 25.0, 4), (T0 + timedelta(minutes=2), 28.0, 4)]
    [rate] = await metric_store.aggregate_windows(
        [WindowRequest(A, SeriesSelector("reqs", "api", delta), Aggregation.RATE, window)])
    assert rate.value == pytest.approx(13.0 / 240) and rate.count == 4
    by_le = await metric_store.bucket_increases(
        MetricQuery(A, SeriesSelector("lat_bucket"), window, Aggregation.P95,
                    Bucketing.parse("1h")))
    assert {le: as_tuples(s) for le, s in by_le.items()} == {
        "1": [(T0, 9.0, 4)], "+Inf": [(T0, 13.0, 4)]}


async def test_delta_exports_are_read_at_their_own_bounds(metric_store: Any) -> None:
    """Delta exports of one histogram need not share bounds (an OTLP exponential histogram
    sends only the buckets its observations reached): the export of small values counts,
    at every larger bound, all it holds. Summed per `le` instead, the bounds 8 and 16
    would miss its 5 observations. An `le` text that names no bound is left out."""
    delta = {"__temporality__": "delta"}
    exports = [(T0 + timedelta(minutes=1), {"1": 3.0, "2": 5.0, "+Inf": 5.0, "abc": 100.0}),
               (T0 + timedelta(minutes=2), {"8": 1.0, "16": 4.0, "+Inf": 4.0}),
               (T0 + timedelta(minutes=70), {"2": 2.0, "16": 3.0, "+Inf": 3.0})]
    points = [MetricPoint(A, at, "lat_bucket", count, "api", {**delta, "le": le})
              for at, counts in exports for le, count in counts.items()]
    # Another series of the histogram (other tags): an export of its own at the same time.
    points.append(MetricPoint(A, T0 + timedelta(minutes=1), "lat_bucket", 2.0, "api",
                              {**delta, "le": "+Inf", "route": "/b"}))
    points.append(MetricPoint(A, T0 + timedelta(minutes=1), "lat_bucket", 2.0, "api",
                              {**delta, "le": "0.5", "route": "/b"}))
    await metric_store.write_batches([batch("delta-bounds", points)])
    found = await metric_store.bucket_increases(MetricQuery(
        A, SeriesSelector("lat_bucket"), TimeRange(T0, T0 + timedelta(hours=2)),
        Aggregation.P95, Bucketing.parse("1h")))
    hour = T0 + timedelta(hours=1)
    assert {le: as_tuples(s) for le, s in found.items()} == {
        "0.5": [(T0, 2.0, 1)], "1": [(T0, 5.0, 1)], "2": [(T0, 7.0, 1), (hour, 2.0, 1)],
        "8": [(T0, 8.0, 1)], "16": [(T0, 11.0, 1), (hour, 3.0, 1)],
        "+Inf": [(T0, 11.0, 3), (hour, 3.0, 1)]}


async def test_cumulative_exports_grow_across_a_change_of_bounds(metric_store: Any) -> None:
    """A cumulative histogram whose bounds change (an exponential histogram lowering its
    scale as its range grows: base 2 → base 4) and then restarts from zero: each export's
    growth since the previous one, at every bound, is exact. Read per `le` as counters of
    their own, the new bound 16 would have nothing to grow from and its 3 observations
    would fall in +Inf."""
    exports = [(T0 - timedelta(minutes=1), {"1": 2.0, "2": 3.0, "4": 5.0, "+Inf": 5.0}),
               (T0 + timedelta(minutes=1), {"1": 2.0, "4": 7.0, "16": 10.0, "+Inf": 10.0}),
               (T0 + timedelta(minutes=2), {"1": 0.0, "4": 1.0, "+Inf": 1.0})]  # a restart
    points = [MetricPoint(A, at, "lat_bucket", count, "api", {"route": "/a", "le": le})
              for at, counts in exports for le, count in counts.items()]
    await metric_store.write_batches([batch("changed-bounds", points)])
    window = TimeRange(T0, T0 + timedelta(hours=1))
    found = await metric_store.bucket_increases(MetricQuery(
        A, SeriesSelector("lat_bucket"), window, Aggregation.P95, Bucketing.parse("1h")))
    # 2 observations in (1, 4] and 3 in (4, 16], then 1 in (1, 4] after the restart.
    assert {le: as_tuples(s) for le, s in found.items()} == {
        "1": [(T0, 0.0, 2)], "4": [(T0, 3.0, 2)], "16": [(T0, 6.0, 1)],
        "+Inf": [(T0, 6.0, 2)]}


async def test_projects_with_their_own_cutoff_drop_by_it(metric_store: Any) -> None:
    """Per-project retention: A keeps less than the default (its 28 Feb goes), B more (its
    27 Feb stays although the default's cutoff is 28 Feb), C keeps everything, D follows
    the default. Raw values expire by the same rules, summaries then answer for them."""
    days = [datetime(2024, 2, d, 12, tzinfo=UTC) for d in (27, 28, 29)] + [T0]
    projects = (A, B, "project-c", "project-d")
    points = [MetricPoint(p, ts, "cpu", float(i)) for i, ts in enumerate(days) for p in projects]
    await metric_store.write_batches([batch("own-retention", points)])
    default = datetime(2024, 2, 28, 6, tzinfo=UTC)  # the 27th goes
    own = {A: datetime(2024, 2, 29, 6, tzinfo=UTC), B: datetime(2024, 2, 27, 6, tzinfo=UTC),
           "project-c": None}
    everything = TimeRange(datetime(2024, 2, 20, tzinfo=UTC), T0 + timedelta(days=1))

    async def kept(project: str) -> list[datetime]:
        (series,) = await metric_store.query([MetricQuery(
            project, SeriesSelector("cpu"), everything, Aggregation.COUNT, Bucketing.parse("1h"))])
        return list(series.buckets)

    await metric_store.expire_values_before(default, own)  # values go, summaries stay
    for project in projects:
        assert await kept(project) == days, project
        (p50,) = await metric_store.query([MetricQuery(
            project, SeriesSelector("cpu"), everything, Aggregation.P50, Bucketing.parse("1d"))])
        assert list(p50.counts) == [1, 1, 1, 1], project  # each point once: value or summary
    [histogram_a] = [await metric_store.histogram(HistogramQuery(A, SeriesSelector("cpu"),
                                                                 everything, 4))]
    assert histogram_a.total == 2  # raw values of 29 Feb and 1 Mar only

    assert await metric_store.drop_before(default, own)
    assert await kept(A) == days[2:]
    assert await kept(B) == days
    assert await kept("project-c") == days
    assert await kept("project-d") == days[1:]


async def test_a_late_point_into_an_expired_hour_counts_once_and_joins_its_summary(
        metric_store: Any) -> None:
    """A project keeping less than the server may still receive a point for an hour whose
    values expired: it is a raw value beside the hour's summary (histograms see it, every
    aggregate counts it once, compacted or not) until its values expire again, then it
    joins the summaries; the hour's earlier points are never lost."""
    hour = datetime(2024, 2, 27, 10, tzinfo=UTC)
    values = [1.0, 2.0, 3.0, 4.0]
    await metric_store.write_batches([batch("early", [
        MetricPoint(A, hour + timedelta(minutes=10 * i), "cpu", v) for i, v in enumerate(values)])])
    own = {A: datetime(2024, 2, 28, 6, tzinfo=UTC)}
    await metric_store.expire_values_before(None, own)
    late = MetricPoint(A, hour + timedelta(minutes=45), "cpu", 10.0)
    await metric_store.write_batches([batch("late", [late])])
    await metric_store.compact(COMPACT_ALL_BEFORE)
    window = TimeRange(hour - timedelta(days=1), hour + timedelta(days=1))

    async def answers() -> list[Any]:
        found = []
        for aggregation in (Aggregation.COUNT, Aggregation.SUM, Aggregation.MAX,
                            Aggregation.MIN):
            for bucket in ("1h", "1d"):
                (series,) = await metric_store.query([MetricQuery(
                    A, SeriesSelector("cpu"), window, aggregation, Bucketing.parse(bucket))])
                found.append(as_tuples(series))
        (p50,) = await metric_store.query([MetricQuery(
            A, SeriesSelector("cpu"), window, Aggregation.P50, Bucketing.parse("1d"))])
        found.append((list(p50.counts), [round(v, 1) for v in p50.values]))
        return found

    day = datetime(2024, 2, 27, tzinfo=UTC)
    expected = [[(hour, 5.0, 5)], [(day, 5.0, 5)], [(hour, 20.0, 5)], [(day, 20.0, 5)],
                [(hour, 10.0, 5)], [(day, 10.0, 5)], [(hour, 1.0, 5)], [(day, 1.0, 5)],
                ([5], [3.0])]
    assert await answers() == expected
    histogram = await metric_store.histogram(HistogramQuery(A, SeriesSelector("cpu"), window, 2))
    assert (histogram.total, histogram.min, histogram.max) == (1, 10.0, 10.0)

    await metric_store.expire_values_before(None, own)  # the late value goes too
    assert await answers() == expected
    assert (await metric_store.histogram(
        HistogramQuery(A, SeriesSelector("cpu"), window, 2))).total == 0


# -- metric metadata --------------------------------------------------------------------------


async def test_metadata_is_written_with_its_batch_latest_wins_per_project(
        metric_store: Any) -> None:
    counter = MetricMetadata("orders", MetricType.COUNTER, "Orders placed", "1")
    point = MetricPoint(A, T0, "orders", 1.0)
    await metric_store.write_batches([
        MetricBatch("d1", A, T0, [point], (counter,)),
        MetricBatch("d2", B, T0, [], (MetricMetadata("orders", MetricType.GAUGE),)),
    ])
    assert await metric_store.metric_metadata(A) == {"orders": counter}
    assert await metric_store.metric_metadata(B) == {"orders": MetricMetadata(
        "orders", MetricType.GAUGE)}
    newer = MetricMetadata("orders", MetricType.COUNTER, "Orders placed, all shops", "1")
    stale = MetricMetadata("orders", MetricType.GAUGE, "a redelivery", "")
    # a redelivered message changes nothing; a new one with only metadata is kept
    await metric_store.write_batches([MetricBatch("d1", A, T0, [point], (stale,))])
    assert (await metric_store.metric_metadata(A))["orders"] == counter
    await metric_store.write_batches([MetricBatch("d3", A, T0, [], (newer,))])
    assert await metric_store.metric_metadata(A) == {"orders": newer}
    assert await metric_store.metric_metadata("nobody") == {}
