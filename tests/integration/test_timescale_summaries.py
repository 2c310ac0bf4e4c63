"""TimescaleDB only (skipped on plain PostgreSQL, which CI runs): the summaries the
compaction job writes beside the hypertable's points, values expiring by project out of
*compressed* chunks while the summaries answer, and the migration's policies (ADR 0017).
Run on a local build of TimescaleDB 2.28.3 (see docs/adr/0017)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from opspilot.adapters.memory.metrics import InMemoryMetricStore
from opspilot.domain.ingest import MetricBatch
from opspilot.domain.metrics import Aggregation, MetricPoint, MetricQuery, SeriesSelector
from opspilot.domain.timewindow import Bucketing, TimeRange
from tests.contract.conftest import fresh_database

pytestmark = pytest.mark.integration
DAY = datetime(2024, 2, 27, tzinfo=UTC)
LATER = datetime(2024, 3, 1, 12, tzinfo=UTC)
EVERYTHING = TimeRange(DAY - timedelta(days=1), LATER)


def timescale_only(db: Any) -> None:
    if not db.timescale:
        pytest.skip("TimescaleDB is not usable on this server (plain PostgreSQL)")


def points(project: str) -> list[MetricPoint]:
    """Three days of a gauge every 5 minutes, two services."""
    return [MetricPoint(project, DAY + timedelta(minutes=5 * i), "cpu",
                        round(40 + (i * 7919 % 1000) / 37, 2), f"s{i % 2}")
            for i in range(3 * 24 * 12)]


async def answers(store: Any, project: str) -> list[Any]:
    queries = [MetricQuery(project, SeriesSelector("cpu", service), EVERYTHING, aggregation,
                           Bucketing.parse(bucket))
               for service in (None, "s1") for bucket in ("1h", "1d")
               for aggregation in (Aggregation.COUNT, Aggregation.AVG, Aggregation.MAX,
                                   Aggregation.P95)]
    return [(list(s.buckets), list(s.counts), [round(v, 9) for v in s.values])
            for s in await store.query(queries)]


async def chunks(db: Any) -> tuple[int, int]:
    """(chunks of `metrics`, of which compressed)."""
    async with db.connection() as conn:
        row = await conn.fetchrow(
            "SELECT count(*), count(*) FILTER (WHERE is_compressed)"
            " FROM timescaledb_information.chunks"
            " WHERE hypertable_schema = current_schema() AND hypertable_name = 'metrics'")
    return row[0], row[1]


async def test_values_expire_by_project_from_compressed_chunks_and_summaries_answer() -> None:
    async with fresh_database() as db:
        timescale_only(db)
        store, reference = db.metric_store, InMemoryMetricStore()
        for target in (store, reference):
            await target.write_batches([MetricBatch(p, p, DAY, points(p)) for p in "ab"])
        result = await store.compact(LATER)
        assert (result.periods, result.points, result.backlog) == (72, 2 * 864, 0)
        async with db.connection() as conn:  # the summaries sit beside the points
            assert await conn.fetchval("SELECT count(*) FROM metrics") == 2 * 864
            assert await conn.fetchval("SELECT count(*) FROM metric_summaries") == 2 * 2 * 72
            await conn.execute("SELECT compress_chunk(c) FROM show_chunks('metrics') c")
        assert await chunks(db) == (3, 3)
        assert await answers(store, "a") == await answers(reference, "a")

        # b keeps its values a day longer than the default: 27 Feb goes whole for both
        # (drop_chunks), 28 Feb row by row for a only, out of a compressed chunk
        cutoff, longer = datetime(2024, 2, 29, 6, tzinfo=UTC), {"b": DAY + timedelta(hours=30)}
        for target in (store, reference):
            await target.expire_values_before(cutoff, longer)
        assert await chunks(db) == (2, 2)
        async with db.connection() as conn:
            hot = dict(await conn.fetch("SELECT project_id, count(*) FROM metrics GROUP BY 1"))
        assert hot == {"a": 288, "b": 2 * 288}
        for project in "ab":  # exact count/avg/max, p95 by the same sketch as the reference
            assert await answers(store, project) == await answers(reference, project), project

        for target in (store, reference):
            await target.drop_before(cutoff, longer)
        for project in "ab":
            assert await answers(store, project) == await answers(reference, project), project


async def test_a_late_point_marks_its_hour_and_the_summary_is_rewritten() -> None:
    async with fresh_database() as db:
        timescale_only(db)
        store = db.metric_store
        await store.write_batches([MetricBatch("m", "a", DAY, points("a")[:12])])
        await store.compact(LATER)
        late = MetricPoint("a", DAY + timedelta(minutes=59), "cpu", 1e6, "s1")
        await store.write_batches([MetricBatch("late", "a", DAY, [late])])
        async with db.connection() as conn:
            pending = await conn.fetch("SELECT * FROM metric_pending_summaries")
        assert [tuple(r) for r in pending] == [("a", DAY)]
        assert (await store.compact(LATER)).points == 13
        await store.expire_values_before(LATER)  # only the summaries are left
        [top] = await store.query([MetricQuery("a", SeriesSelector("cpu"), EVERYTHING,
                                               Aggregation.MAX, Bucketing.parse("1d"))])
        assert (list(top.values), list(top.counts)) == ([1e6], [13])


async def test_the_migration_keeps_compression_and_leaves_retention_to_the_job() -> None:
    async with fresh_database() as db:
        timescale_only(db)
        async with db.connection() as conn:
            jobs = await conn.fetch(
                "SELECT hypertable_name, proc_name FROM timescaledb_information.jobs"
                " WHERE hypertable_schema = current_schema() ORDER BY 1, 2")
        assert [tuple(j) for j in jobs] == [("log_metadata", "policy_retention"),
                                            ("metrics", "policy_compression")]
