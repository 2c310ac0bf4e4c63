"""Retention: once per period across replicas, whole days, a failing store isolated."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from opspilot.adapters.clock_and_ids import FixedClock
from opspilot.adapters.memory.logs import InMemoryLogMetadataStore, InMemoryLogStore
from opspilot.adapters.memory.metrics import InMemoryMetricStore
from opspilot.adapters.memory.scheduling import InMemorySchedulerLock
from opspilot.adapters.prometheus.alerts import AlertTelemetry
from opspilot.application.retention import Retention, RetentionPolicy
from opspilot.domain.errors import TransientStoreError
from opspilot.domain.ingest import LogBatch, MetricBatch
from opspilot.domain.logs import LogLevel, LogRecord
from opspilot.domain.metrics import HistogramQuery, MetricPoint
from opspilot.entrypoints.alert_scheduler import _retention_loop

NOW = datetime(2024, 6, 10, 12, 30, tzinfo=UTC)
P = "p1"


async def _stores() -> tuple[InMemoryMetricStore, InMemoryLogStore, InMemoryLogMetadataStore]:
    metrics, logs, meta = InMemoryMetricStore(), InMemoryLogStore(), InMemoryLogMetadataStore()
    ages = [timedelta(days=d) for d in (1, 5, 40, 100)]
    await metrics.write_batches([MetricBatch("m", P, NOW, [
        MetricPoint(P, NOW - age, "cpu", 1.0) for age in ages])])
    records = [LogRecord(f"r{i}", P, NOW - age, LogLevel.INFO, "x") for i, age in enumerate(ages)]
    await logs.write_batches([LogBatch("l", P, NOW, records)])
    await meta.write_batches([LogBatch("l", P, NOW, records)])
    return metrics, logs, meta


async def test_each_kind_keeps_its_own_retention_and_one_replica_runs_per_period() -> None:
    metrics, logs, meta = await _stores()
    lock = InMemorySchedulerLock()
    policy = RetentionPolicy(metrics=timedelta(days=90), logs=timedelta(days=30))
    telemetry = AlertTelemetry()
    first = Retention(metrics, logs, meta, lock, policy, observer=telemetry)
    second = Retention(metrics, logs, meta, lock, policy)  # another replica, same lock

    report = await first.run(NOW)
    assert report.owned and not report.failed
    assert report.dropped == {"metrics": ["2024-03-02"],
                              "logs": ["2024-03-02", "2024-05-01"],
                              "log_metadata": ["2024-03-02", "2024-05-01"]}
    assert not (await second.run(NOW + timedelta(minutes=20))).owned  # same hour
    assert (await second.run(NOW + timedelta(hours=1))).owned  # the next hour
    sample = telemetry.registry.get_sample_value
    assert sample("opspilot_retention_dropped_total", {"store": "logs"}) == 2
    assert sample("opspilot_retention_runs_total", {"store": "metrics", "outcome": "ok"}) == 1


async def test_keep_forever_skips_the_store() -> None:
    metrics, logs, meta = await _stores()
    policy = RetentionPolicy.of_days(metric_days=0, log_days=30)
    assert policy.metrics is None
    report = await Retention(metrics, logs, meta, InMemorySchedulerLock(), policy).run(NOW)
    assert "metrics" not in report.dropped
    assert report.dropped["logs"]


class FailingStore(InMemoryLogStore):
    async def drop_before(self, cutoff: datetime) -> list[str]:
        raise TransientStoreError("opensearch down")


async def test_a_failing_store_does_not_stop_the_others() -> None:
    metrics, _, meta = await _stores()
    policy = RetentionPolicy(metrics=timedelta(days=1), logs=timedelta(days=1))
    telemetry = AlertTelemetry()
    report = await Retention(metrics, FailingStore(), meta, InMemorySchedulerLock(), policy,
                             observer=telemetry).run(NOW)
    assert report.failed == {"logs": "opensearch down"}
    assert len(report.dropped["metrics"]) == 3 and len(report.dropped["log_metadata"]) == 3
    assert telemetry.registry.get_sample_value(
        "opspilot_retention_runs_total", {"store": "logs", "outcome": "failed"}) == 1


class DownLock:
    async def acquire_tick(self, tick_key: str) -> bool:
        from opspilot.domain.errors import ServiceUnavailable

        raise ServiceUnavailable("postgres down")


async def test_the_loop_runs_at_start_survives_a_lock_outage_and_stops_on_request() -> None:
    metrics, logs, meta = await _stores()
    policy = RetentionPolicy(metrics=timedelta(days=30), logs=timedelta(days=30))
    telemetry = AlertTelemetry()
    retention = Retention(metrics, logs, meta, InMemorySchedulerLock(), policy, telemetry)
    stop = asyncio.Event()
    task = asyncio.create_task(_retention_loop(retention, FixedClock(NOW), stop))
    runs = {"store": "log_metadata", "outcome": "ok"}
    for _ in range(100):
        if telemetry.registry.get_sample_value("opspilot_retention_runs_total", runs):
            break
        await asyncio.sleep(0.01)
    assert telemetry.registry.get_sample_value("opspilot_retention_dropped_total",
                                               {"store": "metrics"}) == 2  # 40 and 100 days
    assert not task.done()  # waiting for the next hour
    stop.set()
    await asyncio.wait_for(task, 1)

    down = Retention(metrics, logs, meta, DownLock(), policy)  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(_retention_loop(down, FixedClock(NOW), stop))
    await asyncio.sleep(0.05)
    assert not task.done()  # logged and waiting for the next period, not crashed
    stop.set()
    await asyncio.wait_for(task, 1)


@pytest.mark.parametrize("days", [0, -1])
def test_zero_or_negative_days_mean_forever(days: int) -> None:
    assert RetentionPolicy.of_days(days, days) == RetentionPolicy(None, None)


async def test_a_project_with_its_own_retention_is_dropped_by_it() -> None:
    """Server: values 30 days, summaries 90. Project `short` keeps values 3 days and
    summaries 7; `long` keeps values 200 days (summaries at least as long); `p1` follows
    the server. Read from the tenancy store each run, applied by the metric stores."""
    from opspilot.adapters.memory.tenancy import InMemoryTenancyStore
    from opspilot.domain.metrics import Aggregation, MetricQuery, SeriesSelector
    from opspilot.domain.tenancy import MetricRetention, Project
    from opspilot.domain.timewindow import Bucketing, TimeRange

    metrics, logs, meta = await _stores()
    tenancy = InMemoryTenancyStore()
    ages = [timedelta(days=d) for d in (1, 5, 40, 100)]
    for project, own in (("short", MetricRetention(3, 7)), ("long", MetricRetention(200))):
        await tenancy.add_project(Project(project, project, NOW))
        await tenancy.set_metric_retention(project, own)
        await metrics.write_batches([MetricBatch(project, project, NOW, [
            MetricPoint(project, NOW - age, "cpu", 1.0) for age in ages])])
    policy = RetentionPolicy.of_days(metric_days=30, log_days=30, summary_days=90)
    retention = Retention(metrics, logs, meta, InMemorySchedulerLock(), policy,
                          compaction=metrics, tenancy=tenancy)
    report = await retention.run(NOW)
    assert not report.failed

    async def ages_left(project: str, aggregation: Aggregation) -> list[int]:
        window = TimeRange(NOW - timedelta(days=400), NOW)
        (series,) = await metrics.query([MetricQuery(project, SeriesSelector("cpu"), window,
                                                     aggregation, Bucketing.parse("1h"))])
        return [(NOW - b).days for b in series.buckets]

    assert await ages_left("short", Aggregation.COUNT) == [5, 1]  # 40 and 100 days gone
    assert await ages_left("long", Aggregation.COUNT) == [100, 40, 5, 1]
    assert await ages_left(P, Aggregation.COUNT) == [40, 5, 1]  # the server's 90 days
    histogram = await metrics.histogram(HistogramQuery(
        "long", SeriesSelector("cpu"), TimeRange(NOW - timedelta(days=400), NOW), 2))
    assert histogram.total == 4  # all of `long`'s raw values are kept (200 days)
    short = await metrics.histogram(HistogramQuery(
        "short", SeriesSelector("cpu"), TimeRange(NOW - timedelta(days=400), NOW), 2))
    assert short.total == 1  # only the day-old value is raw; 5 days ago is a summary
