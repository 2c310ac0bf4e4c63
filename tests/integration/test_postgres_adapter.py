"""PostgreSQL-only behaviour of the metric store: partitions, the DEFAULT partition,
retention, racing writers, error translation, and migrations matching schema.py.

Needs OPSPILOT_DATABASE_URL (skips without it, fails under CI / OPSPILOT_REQUIRE_SERVICES).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from asyncpg import exceptions as pgx

from opspilot.adapters.postgres.partitions import DAY, HOUR
from opspilot.domain.errors import TransientStoreError
from opspilot.domain.ingest import MetricBatch
from opspilot.domain.metrics import MetricPoint
from tests.contract.conftest import database_url_or_skip, fresh_database

pytestmark = pytest.mark.integration

NOW = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
PROJECT = "project-a"


def points_at(*moments: datetime, name: str = "x") -> list[MetricPoint]:
    return [MetricPoint(PROJECT, m, name, float(i)) for i, m in enumerate(moments)]


def batch(message_id: str, points: list[MetricPoint]) -> MetricBatch:
    return MetricBatch(message_id, PROJECT, NOW, points)


async def partitions(db: Any, table: str = "metrics") -> list[str]:
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = to_regclass($1) ORDER BY 1", table)
    return [r["relname"] for r in rows]


async def rows_by_partition(db: Any) -> dict[str, int]:
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT tableoid::regclass::text AS part, count(*) AS n FROM metrics GROUP BY 1")
    return {r["part"]: r["n"] for r in rows}


def plain_only(db: Any) -> None:
    """TimescaleDB (where the server has it) keeps chunks, not these partitions; its
    retention is in test_timescale_summaries.py."""
    if db.timescale:
        pytest.skip("plain PostgreSQL's daily partitions (TimescaleDB has chunks)")


async def test_partitions_are_created_ahead_and_on_demand() -> None:
    async with fresh_database(now=lambda: NOW, metric_partition=DAY) as db:
        plain_only(db)
        expected = ["metrics_default"] + [f"metrics_p202403{d:02d}" for d in range(9, 14)]
        assert await partitions(db) == expected
        assert "log_metadata_p20240313" in await partitions(db, "log_metadata")
        # a write ten days back creates that day's partition, and the rows land in it
        old = NOW - timedelta(days=10)
        await db.metric_store.write_batches([batch("m-1", points_at(old, old))])
        assert "metrics_p20240229" in await partitions(db)
        assert await rows_by_partition(db) == {"metrics_p20240229": 2}
        # an explicit call over a range (horizon-bounded) is idempotent
        assert await db.ensure_partitions(NOW, NOW + timedelta(days=1)) == []


async def test_default_partition_catches_far_off_timestamps_and_hands_them_over() -> None:
    far = [datetime(1999, 1, 1, tzinfo=UTC), NOW + timedelta(days=30),
           datetime(2999, 1, 1, tzinfo=UTC)]
    async with fresh_database(now=lambda: NOW, metric_partition=DAY) as db:
        plain_only(db)
        before = await partitions(db)
        assert await db.metric_store.write_batches([batch("m-far", points_at(*far))]) == 3
        assert await partitions(db) == before  # no partition per stray timestamp
        assert await rows_by_partition(db) == {"metrics_default": 3}
        # time passes: the day 30 days ahead enters the horizon and takes its row along
        db.metric_partitions._now = lambda: NOW + timedelta(days=29)
        created = await db.ensure_partitions(far[1], far[1])
        assert created == ["metrics_p20240409"]
        assert await rows_by_partition(db) == {"metrics_default": 2, "metrics_p20240409": 1}


async def test_retention_drops_whole_old_partitions() -> None:
    async with fresh_database(now=lambda: NOW, metric_partition=DAY) as db:
        plain_only(db)
        days = [NOW - timedelta(days=d) for d in (20, 8, 6, 4, 1, 0)]
        moments = [*days, datetime(1990, 1, 1, tzinfo=UTC)]
        await db.metric_store.write_batches([batch("m", points_at(*moments))])
        dropped = await db.drop_before("metrics", NOW - timedelta(days=5))
        # cutoff 2024-03-05 12:00: only days that end before it go, whole
        assert dropped == ["metrics_p20240219", "metrics_p20240302", "metrics_p20240304",
                           "metrics_default<2024-03-05"]
        remaining = await rows_by_partition(db)
        assert remaining == {"metrics_p20240306": 1, "metrics_p20240309": 1,
                             "metrics_p20240310": 1}  # 1990's row left the default too
        assert "metrics_default" in await partitions(db)
        # a late point for a dropped day comes back in a recreated partition (within horizon)
        await db.metric_store.write_batches([batch("m-late", points_at(days[1]))])
        assert (await rows_by_partition(db))["metrics_p20240302"] == 1


async def test_hourly_partitions_cover_the_hours_being_written_and_a_few_ahead() -> None:
    """`metrics` on plain PostgreSQL: a partition an hour (compaction truncates a closed
    hour's), made from two hours back to six ahead; older points go to the default."""
    async with fresh_database(now=lambda: NOW) as db:
        plain_only(db)
        hours = [f"metrics_p20240310{h:02d}" for h in range(10, 19)]
        assert await partitions(db) == ["metrics_default", *hours]
        assert "log_metadata_p20240313" in await partitions(db, "log_metadata")  # daily
        recent, old = NOW - timedelta(minutes=90), NOW - timedelta(hours=3)
        await db.metric_store.write_batches([batch("m-1", points_at(recent, old))])
        assert await partitions(db) == ["metrics_default", *hours]
        assert await rows_by_partition(db) == {"metrics_p2024031010": 1, "metrics_default": 1}
        # time passes: the first write past the hours made creates six more in one go
        db.metric_partitions._now = lambda: NOW + timedelta(hours=7)
        await db.metric_store.write_batches([batch("m-2", points_at(NOW + timedelta(hours=7)))])
        made = await partitions(db)
        assert made[-1] == "metrics_p2024031101" and "metrics_p2024031019" in made
        assert await rows_by_partition(db) == {"metrics_p2024031010": 1, "metrics_default": 1,
                                               "metrics_p2024031019": 1}


async def test_an_upgraded_schema_keeps_its_daily_partitions_until_they_are_passed() -> None:
    """A database partitioned by day (before hourly partitions) gets hourly ones only where
    no daily partition covers the hour: no overlap error, the rows go where they belong."""
    from opspilot.adapters.postgres.database import PostgresDatabase

    url = await database_url_or_skip()
    async with fresh_database(now=lambda: NOW, metric_partition=DAY) as old:
        plain_only(old)
        later = NOW + timedelta(days=3, hours=11)  # 13 Mar 23:00: its daily partition's last hour
        new = PostgresDatabase(url, schema=old.schema, now=lambda: later)
        await new.connect()
        try:
            made = await partitions(new)
            assert "metrics_p20240313" in made and "metrics_p2024031322" not in made
            assert "metrics_p2024031400" in made  # the hours past the last day are hourly
            assert "metrics_p2024031405" in made
            await new.metric_store.write_batches([batch("m", points_at(later, later + HOUR))])
            assert await rows_by_partition(new) == {"metrics_p20240313": 1,
                                                    "metrics_p2024031400": 1}
        finally:
            await new.close()


async def test_racing_writers_of_one_batch_write_it_once() -> None:
    async with fresh_database(now=lambda: NOW) as one, fresh_database(now=lambda: NOW) as _:
        from opspilot.adapters.postgres.database import PostgresDatabase

        twin = PostgresDatabase(one._dsn, schema=one.schema, now=lambda: NOW)
        await twin.connect()
        try:
            for round_ in range(5):
                pts = points_at(*(NOW + timedelta(seconds=i) for i in range(2_000)),
                                name=f"r{round_}")
                results = await asyncio.gather(
                    one.metric_store.write_batches([batch(f"m-{round_}", pts)]),
                    twin.metric_store.write_batches([batch(f"m-{round_}", pts)]),
                )
                assert sorted(results) == [0, 2_000]
                async with one.connection() as conn:
                    stored = await conn.fetchval(
                        "SELECT count(*) FROM metrics WHERE metric_name = $1", f"r{round_}")
                assert stored == 2_000
        finally:
            await twin.close()


async def test_unreachable_server_is_a_transient_error() -> None:
    from opspilot.adapters.postgres.database import PostgresDatabase

    db = PostgresDatabase("postgresql://nobody:x@127.0.0.1:1/none", command_timeout=2)
    with pytest.raises(TransientStoreError):
        await db.connect()
    with pytest.raises(TransientStoreError):
        await db.metric_store.write_batches([batch("m", points_at(NOW))])
    async with fresh_database() as live:
        store = live.metric_store
    with pytest.raises(TransientStoreError):  # the pool is closed now
        await store.ping()


@pytest.mark.parametrize("lost", [
    pgx.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
    pgx.AdminShutdownError("terminating connection due to administrator command"),
    ConnectionResetError("connection reset by peer"),
])
async def test_a_lost_connection_is_transient_and_never_handed_out_again(
    lost: BaseException,
) -> None:
    """Seen in the database-outage pipeline test: after PostgreSQL shut down mid-query, a
    pooled connection came back confused and the next request got a 500. Such a failure is
    now a TransientStoreError (503 / worker retry) and its connection is closed, so the pool
    opens a fresh one for the next caller."""
    async with fresh_database(min_size=1, max_size=1) as db:
        with pytest.raises(TransientStoreError):
            async with db.connection() as conn:
                first = conn.get_server_pid()
                raise lost
        async with db.connection() as conn:  # the pool's one slot holds a new session
            assert conn.get_server_pid() != first
            assert await conn.fetchval("SELECT 1") == 1


async def test_migrate_is_idempotent_and_matches_schema_py() -> None:
    import asyncpg
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy.ext.asyncio import create_async_engine

    from opspilot.adapters.postgres.database import asyncpg_dsn
    from opspilot.adapters.postgres.migrate import migrate, sqlalchemy_url
    from opspilot.adapters.postgres.schema import metadata

    url = await database_url_or_skip()
    async with fresh_database() as db:
        await migrate(url, db.schema)  # a second run changes nothing
        engine = create_async_engine(
            sqlalchemy_url(url), connect_args={"server_settings": {"search_path": db.schema}})

        def diff(sync_conn: Any) -> list[Any]:
            context = MigrationContext.configure(sync_conn, opts={"include_schemas": False})
            return compare_metadata(context, metadata)

        try:
            async with engine.connect() as conn:
                changes = await conn.run_sync(diff)
        finally:
            await engine.dispose()
        ignored = ("metrics_default", "log_metadata_default", "alembic_version")
        if db.timescale:  # create_hypertable's own index on the time column
            ignored += ("metrics_timestamp_idx", "log_metadata_timestamp_idx")
        real = [c for c in changes if not any(name in repr(c) for name in ignored)
                and "_p2" not in repr(c)]
        assert real == []
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            version = await conn.fetchval(f'SELECT version_num FROM "{db.schema}".alembic_version')
        finally:
            await conn.close()
        from alembic.script import ScriptDirectory

        from opspilot.adapters.postgres.migrate import alembic_config

        assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()
