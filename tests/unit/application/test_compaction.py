"""Compaction as a job: one replica per tick, telemetry, and the in-memory store's
downsampling (values expire, hourly summaries answer)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from opspilot.adapters.memory.logs import InMemoryLogMetadataStore, InMemoryLogStore
from opspilot.adapters.memory.metrics import InMemoryMetricStore
from opspilot.adapters.memory.scheduling import InMemorySchedulerLock
from opspilot.adapters.prometheus.alerts import AlertTelemetry
from opspilot.application.compaction import Compaction, CompactionPolicy
from opspilot.application.retention import Retention, RetentionPolicy
from opspilot.domain.ingest import MetricBatch
from opspilot.domain.metrics import Aggregation, MetricPoint, MetricQuery, SeriesSelector
from opspilot.domain.timewindow import Bucketing, TimeRange

NOW = datetime(2024, 6, 10, 12, 40, tzinfo=UTC)
P = "p1"


async def _store(hours: int = 5) -> InMemoryMetricStore:
    store = InMemoryMetricStore()
    points = [MetricPoint(P, NOW - timedelta(minutes=m), "cpu", float(m % 7))
              for m in range(hours * 60)]
    await store.write_batches([MetricBatch("m", P, NOW, points)])
    return store


async def test_one_replica_per_tick_compacts_the_hours_closed_for_the_delay() -> None:
    store, lock, telemetry = await _store(), InMemorySchedulerLock(), AlertTelemetry()
    policy = CompactionPolicy(delay=timedelta(minutes=30), every=timedelta(minutes=5))
    first = Compaction(store, lock, policy, telemetry)
    second = Compaction(store, lock, policy)

    report = await first.run(NOW)
    # 12:40 - 30 min = 12:10: the hours up to 12:00 are closed; 7:41 … 11:59 are 4 h 19 min
    assert (report.owned, report.periods, report.points, report.backlog) == (True, 5, 259, 0)
    assert not (await second.run(NOW + timedelta(minutes=2))).owned  # same tick
    again = await second.run(NOW + timedelta(minutes=5))
    assert again.owned and again.periods == 0
    sample = telemetry.registry.get_sample_value
    assert sample("opspilot_compaction_points_total") == 259
    assert sample("opspilot_compaction_backlog_periods") == 0
    assert sample("opspilot_compaction_duration_seconds_count") == 1


async def test_max_periods_leaves_a_backlog_for_the_next_run() -> None:
    store = await _store()
    job = Compaction(store, InMemorySchedulerLock(),
                     CompactionPolicy(delay=timedelta(0), max_periods=2))
    report = await job.run_once(NOW)
    assert (report.periods, report.backlog) == (2, 3)
    assert (await job.run_once(NOW)).backlog == 1


async def test_summaries_outlive_values_and_answer_long_range_charts() -> None:
    store = InMemoryMetricStore()
    start = NOW - timedelta(days=40)
    points = [MetricPoint(P, start + timedelta(minutes=10 * i), "cpu", float(i % 100))
              for i in range(6 * 24 * 40)]
    await store.write_batches([MetricBatch("m", P, NOW, points)])
    policy = RetentionPolicy.of_days(metric_days=15, log_days=30, summary_days=365)
    retention = Retention(store, InMemoryLogStore(), InMemoryLogMetadataStore(),
                          InMemorySchedulerLock(), policy, compaction=store)
    report = await retention.run(NOW)
    assert report.dropped["metric_values"] and not report.dropped["metrics"]

    # a summary counts when its period's start is in the window: from midnight, all are
    window = TimeRange(start.replace(hour=0, minute=0), NOW)
    daily = {}
    for aggregation in (Aggregation.COUNT, Aggregation.SUM, Aggregation.MAX, Aggregation.P50):
        [series] = await store.query([MetricQuery(P, SeriesSelector("cpu"), window,
                                                  aggregation, Bucketing.parse("1d"))])
        daily[aggregation] = series
    assert len(daily[Aggregation.COUNT].buckets) == 41
    assert sum(daily[Aggregation.COUNT].counts) == len(points)  # nothing lost to expiry
    second_day = daily[Aggregation.SUM].buckets[1]
    values = sorted(p.value for p in points
                    if second_day <= p.timestamp < second_day + timedelta(days=1))
    assert daily[Aggregation.SUM].values[1] == pytest.approx(sum(values))
    assert daily[Aggregation.MAX].values[1] == max(values)
    # an expired day's median comes from the sketch: within 1% of the value at its rank
    assert daily[Aggregation.P50].values[1] == pytest.approx(values[71], rel=0.01)
    assert store.count(P) < len(points)  # the raw values before the cutoff day are gone


def test_summaries_are_kept_at_least_as_long_as_values() -> None:
    assert RetentionPolicy.of_days(90, 30, 10).metric_summaries == timedelta(days=90)
    assert RetentionPolicy.of_days(90, 30, 0).metric_summaries is None
    assert RetentionPolicy.of_days(0, 30, 400).metric_summaries is None
    assert RetentionPolicy.of_days(15, 30).metric_summaries == timedelta(days=15)
