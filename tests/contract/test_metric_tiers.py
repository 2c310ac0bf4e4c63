"""Property-based: the hot tier, the compacted tier (with late points merged) and the
downsampled tier (values expired, summaries kept) answer like the in-memory reference, for
random points, windows, buckets, selectors and every aggregation.

Each example gets its own project id, so the examples share one PostgreSQL schema (a
migration per example would take most of the run) without seeing each other's points.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opspilot.adapters.memory.metrics import InMemoryMetricStore
from opspilot.domain.ingest import MetricBatch
from opspilot.domain.metrics import Aggregation, MetricPoint, MetricQuery, SeriesSelector
from opspilot.domain.ports import WindowRequest
from opspilot.domain.timewindow import Bucketing, TimeRange
from tests.contract.conftest import BACKENDS, fresh_database

T0 = datetime(2024, 2, 28, 22, 0, tzinfo=UTC)  # data spans midnight: two UTC days
SPAN_US = 6 * 3600 * 1_000_000
COMPACT_ALL = datetime(2200, 1, 1, tzinfo=UTC)
SERVICES = [None, "api", "db"]
TAGS: list[dict[str, str]] = [{}, {"region": "eu"}, {"region": "us", "tier": "gold"}]
SELECTORS = [SeriesSelector("m"), SeriesSelector("m", "api"),
             SeriesSelector("m", None, {"region": "us"}), SeriesSelector("m", "db", {"region": "eu"}),
             SeriesSelector("other")]
BUCKETS = ["13s", "1m", "7m", "1h", "90m", "1d"]
_examples = itertools.count()

values = st.one_of(
    st.integers(-1_000, 1_000).map(float),  # counters and integer gauges
    st.integers(-10**6, 10**6).map(lambda i: i / 100),  # two-decimal gauges
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),  # anything else
    st.sampled_from([0.0, 1e150, -1e-300, 0.1]),
)
points = st.lists(
    st.tuples(st.integers(0, SPAN_US - 1), st.sampled_from(["m", "m", "other"]),
              st.sampled_from(SERVICES), st.sampled_from(range(len(TAGS))), values),
    min_size=1, max_size=60,
)
windows = st.tuples(st.integers(-3600, 7 * 3600), st.integers(1, 8 * 3600))


def as_points(project: str, raw: Sequence[tuple[int, str, str | None, int, float]]
              ) -> list[MetricPoint]:
    return [MetricPoint(project, T0 + timedelta(microseconds=us), name, value, service,
                        TAGS[tags]) for us, name, service, tags, value in raw]


def batch(message_id: str, project: str, pts: Sequence[MetricPoint]) -> MetricBatch:
    return MetricBatch(message_id, project, T0, list(pts))


def close(actual: Sequence[float | None], wanted: Sequence[float | None]) -> bool:
    """Equal to ~1e-9 (PostgreSQL adds floats in its own order, the reference uses fsum)."""
    return len(actual) == len(wanted) and all(
        (a is None and w is None) or (a is not None and w is not None
                                      and math.isclose(a, w, rel_tol=1e-9, abs_tol=1e-6))
        for a, w in zip(actual, wanted, strict=True))


async def answers(store: Any, project: str, asks: Sequence[tuple[int, int, int, str]]
                  ) -> list[Any]:
    queries, windows_ = [], []
    for selector, (start, length), aggregation, bucket in asks:  # type: ignore[misc]
        window = TimeRange(T0 + timedelta(seconds=start),
                           T0 + timedelta(seconds=start + length))
        queries.append(MetricQuery(project, SELECTORS[selector], window,
                                   list(Aggregation)[aggregation], Bucketing.parse(bucket)))
        windows_.append(WindowRequest(project, SELECTORS[selector],
                                      list(Aggregation)[aggregation], window))
    series = await store.query(queries)
    found = [(list(s.buckets), list(s.counts), list(s.values)) for s in series]
    found += [(w.count, w.value) for w in await store.aggregate_windows(windows_)]
    for window in {w.window for w in windows_}:  # discovery reads both tiers too
        found.append(("discovery", await store.metric_names(project, window, 10),
                      await store.service_names(project, window, None, 10),
                      await store.tag_values(project, "m", window, 10)))
    return found


def assert_same(actual: list[Any], wanted: list[Any], stage: str) -> None:
    for i, (a, w) in enumerate(zip(actual, wanted, strict=True)):
        if w[0] == "discovery":
            assert a == w, (stage, i)
        elif len(w) == 3:
            assert a[:2] == w[:2], (stage, i)
            assert close(a[2], w[2]), (stage, i, a[2], w[2])
        else:
            assert a[0] == w[0] and close([a[1]], [w[1]]), (stage, i, a, w)


asks = st.lists(st.tuples(st.integers(0, len(SELECTORS) - 1), windows,
                          st.integers(0, len(Aggregation) - 1), st.sampled_from(BUCKETS)),
                min_size=1, max_size=8)


@pytest.fixture(params=BACKENDS)
async def tiered_store(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield InMemoryMetricStore()
        return
    async with fresh_database() as db:
        yield db.metric_store


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(first=points, late=points, asked=asks, split=st.integers(0, 60))
async def test_hot_compacted_and_merged_tiers_answer_like_the_reference(
    tiered_store: Any, first: list[Any], late: list[Any], asked: list[Any], split: int,
) -> None:
    project = f"p{next(_examples)}"
    reference = InMemoryMetricStore()
    one, two = as_points(project, first[:split]), as_points(project, first[split:])
    late_points = as_points(project, late)
    for store in (reference, tiered_store):
        await store.write_batches([batch(f"{project}-1", project, one),
                                   batch(f"{project}-2", project, two)])
    wanted = await answers(reference, project, asked)
    assert_same(await answers(tiered_store, project, asked), wanted, "hot")

    result = await tiered_store.compact(COMPACT_ALL)
    assert result.backlog == 0 and result.points >= len(one) + len(two) - 0
    assert_same(await answers(tiered_store, project, asked), wanted, "compacted")

    for store in (reference, tiered_store):  # late points into compacted hours
        await store.write_batches([batch(f"{project}-3", project, late_points)])
    wanted = await answers(reference, project, asked)
    assert_same(await answers(tiered_store, project, asked), wanted, "late, hot")
    await tiered_store.compact(COMPACT_ALL)
    assert_same(await answers(tiered_store, project, asked), wanted, "late, merged")


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(first=points, asked=asks, compacted=st.booleans())
async def test_summaries_answer_after_values_expire(
    tiered_store: Any, first: list[Any], asked: list[Any], compacted: bool,
) -> None:
    """Downsampling: values before the cutoff's day (28 Feb) expire; the reference and the
    store then answer from the same summaries (hot points are summarised first)."""
    project = f"e{next(_examples)}"
    reference = InMemoryMetricStore()
    pts = as_points(project, first)
    for store in (reference, tiered_store):
        await store.write_batches([batch(f"{project}-1", project, pts)])
    if compacted:
        await tiered_store.compact(COMPACT_ALL)
    cutoff = datetime(2024, 2, 29, 6, tzinfo=UTC)
    for store in (reference, tiered_store):
        await store.expire_values_before(cutoff)
    wanted = await answers(reference, project, asked)
    assert_same(await answers(tiered_store, project, asked), wanted, "expired")
