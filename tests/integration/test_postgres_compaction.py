"""PostgreSQL-only behaviour of the compacted tier: crash safety, a period per compactor,
the per-period lock, the size it reaches, and `opspilot compact --once`.

On TimescaleDB (where the server has it) the same job writes summaries only and the points
stay hot (ADR 0017): `stored` reads the summaries there instead of the blocks, and
`compacted` says what a test expects after compaction on either layout. The encodings, the
size and the truncated days are the plain layout's alone."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from opspilot.adapters.postgres import compaction
from opspilot.adapters.postgres.partitions import DAY
from opspilot.domain.ingest import MetricBatch
from opspilot.domain.metrics import Aggregation, MetricPoint, MetricQuery, SeriesSelector
from opspilot.domain.ports import WindowRequest
from opspilot.domain.timewindow import Bucketing, TimeRange
from tests.contract.conftest import database_url_or_skip, fresh_database

pytestmark = pytest.mark.integration
T0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
LATER = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
EVERYTHING = TimeRange(T0 - timedelta(days=1), T0 + timedelta(days=1))


def gauge(hours: int, every_seconds: int = 10, series: int = 3) -> list[MetricPoint]:
    """Regular 2-decimal gauges with noise (the common case the encoding is made for)."""
    import random

    rng = random.Random(5)
    return [MetricPoint("p", T0 + timedelta(seconds=every_seconds * i), "cpu",
                        round(50 + rng.gauss(0, 5), 2), f"s{k}", {"host": f"h{k}"})
            for i in range(hours * 3600 // every_seconds) for k in range(series)]


async def counts(db: Any) -> tuple[int, int, int]:
    """(hot points, blocks — summaries on TimescaleDB —, points the store counts)."""
    tier = "metric_summaries" if db.timescale else "metric_blocks"
    async with db.connection() as conn:
        hot = await conn.fetchval("SELECT count(*) FROM metrics")
        blocks = await conn.fetchval(f"SELECT count(*) FROM {tier}")
    [total] = await db.metric_store.aggregate_windows(
        [WindowRequest("p", SeriesSelector("cpu"), Aggregation.COUNT, EVERYTHING)])
    return hot, blocks, total.count


def compacted(db: Any, points: int, blocks: int) -> tuple[int, int, int]:
    """`counts` once every closed period is compacted: no hot point left on plain
    PostgreSQL; on TimescaleDB every point stays hot beside its summaries."""
    return (points if db.timescale else 0), blocks, points


def pipeline(db: Any) -> str:
    return "SUMMARY_PIPELINE" if db.timescale else "PIPELINE"


def plain_only(db: Any) -> None:
    if db.timescale:
        pytest.skip("the plain layout's blocks and partitions (TimescaleDB keeps its own)")


async def test_a_failed_compaction_leaves_the_period_hot_and_whole(monkeypatch: Any) -> None:
    async with fresh_database() as db:
        points = gauge(hours=2)
        await db.metric_store.write_batches([MetricBatch("m", "p", T0, points)])
        statements = getattr(compaction, pipeline(db))
        dying = (*statements[:-1], "SELECT 1 / 0")  # in place of WRITE_SUMMARIES
        monkeypatch.setattr(compaction, pipeline(db), dying)
        with pytest.raises(Exception, match="division by zero"):  # after blocks were written
            await db.metric_store.compact(LATER)
        assert await counts(db) == (len(points), 0, len(points))
        monkeypatch.undo()
        result = await db.metric_store.compact(LATER)
        assert (result.periods, result.points, result.backlog) == (2, len(points), 0)
        assert await counts(db) == compacted(db, len(points), 6)


async def test_concurrent_compactors_never_take_a_period_twice() -> None:
    async with fresh_database(max_size=6) as db:
        points = gauge(hours=6)
        await db.metric_store.write_batches([MetricBatch("m", "p", T0, points)])
        end = T0 + timedelta(hours=6)
        results = await asyncio.gather(*(db.metric_store.compact(end) for _ in range(3)))
        assert sum(r.points for r in results) == len(points)
        assert sum(r.periods for r in results) == 6
        assert await counts(db) == compacted(db, len(points), 18)


async def test_a_period_locked_elsewhere_is_skipped_and_left_as_backlog() -> None:
    async with fresh_database() as db:
        await db.metric_store.write_batches([MetricBatch("m", "p", T0, gauge(hours=2))])
        key = db.metric_store._lock_key(T0)
        async with db.connection() as other, other.transaction():
            await other.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key)
            result = await db.metric_store.compact(LATER)
        assert (result.periods, result.backlog) == (1, 1)
        assert (await db.metric_store.compact(LATER)).backlog == 0


async def test_late_points_merge_into_the_compacted_block() -> None:
    async with fresh_database() as db:
        store = db.metric_store
        points = gauge(hours=1)
        await store.write_batches([MetricBatch("m", "p", T0, points)])
        await store.compact(LATER)
        late = [MetricPoint("p", T0 + timedelta(minutes=30, microseconds=7), "cpu", 1e150,
                            "s0", {"host": "h0"})]
        await store.write_batches([MetricBatch("late", "p", T0, late)])
        result = await store.compact(LATER)
        # TimescaleDB rewrites the hour's summaries from all its (hot) points
        assert (result.periods, result.points) == (1, len(points) + 1 if db.timescale else 1)
        assert await counts(db) == compacted(db, len(points) + 1, 3)
        [top] = await store.aggregate_windows(
            [WindowRequest("p", SeriesSelector("cpu", "s0"), Aggregation.MAX, EVERYTHING)])
        assert top.value == 1e150  # the merged block fell back to float8 values, exactly


async def test_regular_gauges_compact_below_ten_bytes_a_point() -> None:
    """On disk, all relations of the tier (their first pages weigh ~3 B a point here)."""
    async with fresh_database() as db:
        plain_only(db)
        points = gauge(hours=4, series=40)
        await db.metric_store.write_batches([MetricBatch("m", "p", T0, points)])
        await db.metric_store.compact(LATER)
        async with db.connection() as conn:
            size = await conn.fetchval(
                "SELECT sum(pg_total_relation_size(t)) FROM unnest(ARRAY['metric_blocks',"
                " 'metric_summaries', 'metric_series']::regclass[]) t")
        assert size / len(points) < 10


def test_compact_once_on_the_command_line() -> None:
    url = asyncio.run(database_url_or_skip())

    async def run() -> dict[str, Any]:
        async with fresh_database() as db:
            await db.metric_store.write_batches([MetricBatch("m", "p", T0, gauge(hours=2))])
            env = {**os.environ, "OPSPILOT_DATABASE_URL": url,
                   "OPSPILOT_DATABASE_SCHEMA": db.schema,
                   "OPSPILOT_METRIC_COMPACTION_DELAY_MINUTES": "0"}
            done = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "opspilot.entrypoints.cli", "compact",
                                 "--once"], env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            assert await counts(db) == compacted(db, 2 * 360 * 3, 6)
            return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    report = asyncio.run(run())
    assert (report["periods"], report["points"], report["backlog"]) == (2, 2 * 360 * 3, 0)


async def test_a_closed_day_emptied_by_compaction_gives_its_pages_back() -> None:
    """Daily partitions (made before `metrics` was partitioned by hour) are truncated once
    their whole day is compacted."""
    async with fresh_database(metric_partition=DAY) as db:
        plain_only(db)
        day = datetime(2024, 2, 29, tzinfo=UTC)
        points = [MetricPoint("p", day + timedelta(seconds=30 * i), "cpu", float(i))
                  for i in range(2880)]
        await db.metric_store.write_batches([MetricBatch("m", "p", day, points)])
        today = [MetricPoint("p", LATER - timedelta(hours=3), "cpu", 1.0)]
        await db.metric_store.write_batches([MetricBatch("t", "p", day, today)])

        async def size(partition: str) -> int:
            async with db.connection() as conn:
                return int(await conn.fetchval("SELECT pg_relation_size($1::regclass)",
                                               partition))

        assert await size("metrics_p20240229") > 0
        await db.metric_store.compact(LATER)
        assert await size("metrics_p20240229") == 0  # truncated: the day is closed and empty
        assert await size("metrics_p20240301") > 0  # today stays (it is still being written)
        [total] = await db.metric_store.aggregate_windows(
            [WindowRequest("p", SeriesSelector("cpu"), Aggregation.COUNT,
                           TimeRange(day, LATER))])
        assert total.count == len(points) + 1


async def test_each_value_encoding_reads_back_exactly_with_exact_percentiles() -> None:
    """A gauge (offsets int2), a wide gauge (a span of 60,000 units: int2 offsets from
    the middle of its range), a wider one (int4 offsets), a fast counter (deltas int2
    where offsets would need int4), and full-precision floats (float8): each series'
    block uses the encoding meant for it, and whole-hour percentiles (values read without
    their timestamps) and 1-minute ones (decoded with them) equal percentile_cont on raw
    rows."""
    import random

    rng = random.Random(11)
    start = T0
    series = {
        "gauge": [round(50 + rng.gauss(0, 5), 2) for _ in range(360)],
        "wide": [-7_000.0 + 60_000 * (i % 2) + rng.randrange(10) for i in range(360)],
        "wider": [float(rng.randrange(-10**6, 10**6)) for _ in range(360)],
        "counter": [1_000_000.0 + 20_000 * i + rng.randrange(50) for i in range(360)],
        "float": [rng.lognormvariate(2, 1) for _ in range(360)],
    }
    points = [MetricPoint("p", start + timedelta(seconds=10 * i), name, value)
              for name, values in series.items() for i, value in enumerate(values)]
    hour = TimeRange(start, start + timedelta(hours=1))
    queries = [MetricQuery("p", SeriesSelector(name), hour, aggregation, Bucketing.parse(bucket))
               for name in series for aggregation in (Aggregation.P50, Aggregation.P99)
               for bucket in ("1h", "1m")]
    async with fresh_database() as db:
        plain_only(db)
        await db.metric_store.write_batches([MetricBatch("m", "p", T0, points)])
        hot = await db.metric_store.query(queries)
        await db.metric_store.compact(LATER)
        async with db.connection() as conn:
            kinds = dict(await conn.fetch(
                "SELECT s.metric_name, concat_ws(',', CASE WHEN v_o2 IS NOT NULL THEN 'o2' END,"
                " CASE WHEN v_o4 IS NOT NULL THEN 'o4' END,"
                " CASE WHEN v_d2 IS NOT NULL THEN 'd2' END, CASE WHEN v_f8 IS NOT NULL"
                " THEN 'f8' END) FROM metric_blocks JOIN metric_series s USING (series_id)"))
        assert kinds == {"gauge": "o2", "wide": "o2", "wider": "o4", "counter": "d2",
                         "float": "f8"}
        compacted = await db.metric_store.query(queries)
    assert [list(s.values) for s in compacted] == [list(s.values) for s in hot]
    assert [list(s.counts) for s in compacted] == [list(s.counts) for s in hot]


def recent_gauge(series: int = 3) -> list[MetricPoint]:
    """The two hours before the stores' clock (PG_NOW, 12:00): in hourly partitions."""
    return [MetricPoint("p", RECENT + timedelta(seconds=10 * i), "cpu", float(i % 97), f"s{k}",
                        {"host": f"h{k}"}) for i in range(720) for k in range(series)]


RECENT = LATER - timedelta(hours=2)


async def relation_size(db: Any, name: str) -> int:
    async with db.connection() as conn:
        return int(await conn.fetchval("SELECT pg_relation_size($1::regclass)", name))


async def test_a_closed_hour_is_read_in_place_truncated_then_dropped() -> None:
    """Hours in their own partitions: compaction empties them by TRUNCATE (no dead rows
    left for VACUUM); once no writer makes them again they are dropped; a late point for
    such an hour lands in the default partition and merges into the block by DELETE."""
    async with fresh_database() as db:
        plain_only(db)
        points = recent_gauge()
        await db.metric_store.write_batches([MetricBatch("m", "p", T0, points)])
        hours = ["metrics_p2024030110", "metrics_p2024030111"]
        assert [await relation_size(db, h) > 0 for h in hours] == [True, True]
        result = await db.metric_store.compact(LATER)
        assert (result.periods, result.points) == (2, len(points))
        assert [await relation_size(db, h) for h in hours] == [0, 0]  # truncated
        assert await counts(db) == (0, 6, len(points))
        db.metric_partitions._now = lambda: LATER + timedelta(hours=3)
        await db.metric_store.compact(LATER)
        async with db.connection() as conn:
            left = {r[0] for r in await conn.fetch("SELECT relname FROM pg_class"
                                                   " WHERE relname LIKE 'metrics_p20240301%'")}
        assert not left & set(hours)  # dropped: outside the hours still written
        late = [MetricPoint("p", RECENT + timedelta(minutes=5, microseconds=3), "cpu", 5.5,
                            "s1", {"host": "h1"})]
        await db.metric_store.write_batches([MetricBatch("late", "p", T0, late)])
        assert (await db.metric_store.compact(LATER)).points == 1
        assert await counts(db) == (0, 6, len(points) + 1)


async def test_a_late_point_written_during_compaction_stays_hot_and_whole(
        monkeypatch: Any) -> None:
    """The compactor holds the hour's partition in SHARE mode: a late writer waits, then
    lands in the truncated partition (hot, counted once) and the next run compacts it."""
    async with fresh_database() as db:
        plain_only(db)
        points = recent_gauge()
        await db.metric_store.write_batches([MetricBatch("m", "p", T0, points)])
        slow = (compaction.PIPELINE[0], "SELECT pg_sleep(1)", *compaction.PIPELINE[1:])
        monkeypatch.setattr(compaction, "PIPELINE", slow)
        monkeypatch.setattr(compaction, "_KEYED", compaction._KEYED + 1)
        late = [MetricPoint("p", RECENT + timedelta(minutes=30, microseconds=1), "cpu", 7.0,
                            "s0", {"host": "h0"})]

        async def write_late() -> int:
            async with db.connection() as conn:  # once the compactor holds the hour
                for _ in range(1000):
                    if await conn.fetchval(
                            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE granted AND relation"
                            " = 'metrics_p2024030110'::regclass AND mode = 'ShareLock')"):
                        break
                    await asyncio.sleep(0.02)
            return int(await db.metric_store.write_batches(
                [MetricBatch("late", "p", T0, late)]))

        result, written = await asyncio.gather(db.metric_store.compact(LATER), write_late())
        assert (result.points, written) == (len(points), 1)
        assert await counts(db) == (1, 6, len(points) + 1)  # the late point: hot, once
        monkeypatch.undo()
        assert (await db.metric_store.compact(LATER)).points == 1
        assert await counts(db) == (0, 6, len(points) + 1)


async def test_a_reader_holding_the_hour_turns_truncate_into_delete() -> None:
    """TRUNCATE waits for readers of the partition only briefly; then the rows, which no
    writer could change, are deleted instead: the compaction still commits, once."""
    async with fresh_database(max_size=6) as db:
        plain_only(db)
        points = recent_gauge()
        await db.metric_store.write_batches([MetricBatch("m", "p", T0, points)])
        async with db.connection() as reader, reader.transaction():
            assert await reader.fetchval("SELECT count(*) FROM metrics") == len(points)
            result = await db.metric_store.compact(LATER)
        assert result.points == len(points)
        assert await counts(db) == (0, 6, len(points))
        assert await relation_size(db, "metrics_p2024030110") > 0  # deleted, not truncated
