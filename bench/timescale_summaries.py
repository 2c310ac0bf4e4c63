"""TimescaleDB: what the hourly summaries cost beside the hypertable, in one run (ADR 0017).

    OPSPILOT_DATABASE_URL=postgresql://…  (a server with the timescaledb extension preloaded)
    .venv/bin/python bench/timescale_summaries.py --scale 0.5

Data: `--scale`·100 gauge series, a point every 10 s for 24 h ending at NOW, 2-decimal
values with noise. Two schemas migrated with TimescaleDB: `marked` gets every batch through
the adapter's `write_batches` (COPY + inbox + the (project, hour) pairs ingest now marks),
`plain` the same batches through the adapter's COPY without the pairs (what ingest was
before migration 0008), alternating batch by batch: the ingest ratio. Then on `marked`:
`compact` (the summaries of all 24 closed hours: points/s, against the ingest rate of the
same run), the summaries' size per point beside the hypertable's after `compress_chunk`,
a 24 h / 1 h avg read from the compressed hypertable, then `expire_values_before` with the
project's own retention ending at NOW (its values deleted row by row out of the compressed
chunks: the server default keeps them) and the same read from the summaries (median of
`--queries` runs each). The schemas are dropped unless --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opspilot.adapters.postgres.database import PostgresDatabase, asyncpg_dsn  # noqa: E402
from opspilot.adapters.postgres.metrics import COLUMNS  # noqa: E402
from opspilot.adapters.postgres.migrate import migrate  # noqa: E402
from opspilot.domain.ingest import MetricBatch, Stream  # noqa: E402
from opspilot.domain.metrics import (  # noqa: E402
    Aggregation,
    MetricPoint,
    MetricQuery,
    SeriesSelector,
)
from opspilot.domain.timewindow import Bucketing, TimeRange  # noqa: E402

NOW = datetime(2024, 6, 1, tzinfo=UTC)
PROJECT = "00000000-0000-4000-8000-000000000001"


def batches(scale: float, size: int) -> list[MetricBatch]:
    rng = random.Random(7)
    start = NOW - timedelta(hours=24)
    points = [MetricPoint(PROJECT, start + timedelta(seconds=10 * i), "cpu",
                          round(50 + 10 * (i % 360) / 360 + rng.gauss(0, 3), 2), "api",
                          {"host": f"h{k}"})
              for i in range(24 * 360) for k in range(int(100 * scale))]
    return [MetricBatch(f"b{n}", PROJECT, NOW, points[n:n + size])
            for n in range(0, len(points), size)]


def copy_only(db: PostgresDatabase, batch: MetricBatch) -> Any:
    """The adapter's COPY + inbox without the pairs (ingest before migration 0008)."""
    rows = [(p.project_id, p.timestamp, p.name, p.value, p.service,
             orjson.dumps(p.tags).decode() if p.tags else None) for p in batch.points]
    return db.copy_once("metrics", COLUMNS, Stream.METRICS, {batch.message_id: rows}, 1)


async def size(db: PostgresDatabase, sql: str) -> int:
    async with db.connection() as conn:
        return int(await conn.fetchval(sql) or 0)


async def main(args: argparse.Namespace) -> int:
    url = args.url or os.environ["OPSPILOT_DATABASE_URL"]
    schemas = {name: f"bench_ts_{name}_{uuid.uuid4().hex[:6]}" for name in ("marked", "plain")}
    dbs: dict[str, PostgresDatabase] = {}
    try:
        for name, schema in schemas.items():
            await migrate(url, schema, timescale=True)
            dbs[name] = PostgresDatabase(url, schema=schema, now=lambda: NOW)
            await dbs[name].connect()
        work = batches(args.scale, args.batch)
        points = sum(len(b.points) for b in work)
        took: dict[str, list[float]] = {"marked": [], "plain": []}
        for batch in work:  # alternating: both see the same load on the machine
            began = time.perf_counter()
            await dbs["marked"].metric_store.write_batches([batch])
            took["marked"].append(time.perf_counter() - began)
            began = time.perf_counter()
            await copy_only(dbs["plain"], batch)
            took["plain"].append(time.perf_counter() - began)
        rate = {k: points / sum(v) for k, v in took.items()}
        store = dbs["marked"].metric_store
        began = time.perf_counter()
        result = await store.compact(NOW)
        summarise_s = time.perf_counter() - began
        async with dbs["marked"].connection() as conn:
            await conn.execute("SELECT compress_chunk(c) FROM show_chunks('metrics') c")
        hypertable = await size(dbs["marked"], "SELECT hypertable_size('metrics')")
        summaries = await size(dbs["marked"], "SELECT sum(pg_total_relation_size(t)) FROM"
                               " unnest(ARRAY['metric_summaries', 'metric_series',"
                               " 'metric_pending_summaries']::regclass[]) t")
        query = MetricQuery(PROJECT, SeriesSelector("cpu"), TimeRange(NOW - timedelta(hours=24),
                            NOW), Aggregation.AVG, Bucketing.parse("1h"))

        async def read() -> tuple[float, Any]:
            runs = []
            for _ in range(args.queries):
                began = time.perf_counter()
                [series] = await store.query([query])
                runs.append(time.perf_counter() - began)
            return statistics.median(runs), series

        hot_s, hot = await read()
        began = time.perf_counter()
        await store.expire_values_before(NOW - timedelta(days=2), {PROJECT: NOW})
        expire_s = time.perf_counter() - began
        left = await size(dbs["marked"], "SELECT count(*) FROM metrics")
        summary_s, summarised = await read()
        assert list(summarised.counts) == list(hot.counts), "the summaries count every point"
        lines = [
            f"points: {points:,} ({len(work)} batches of {args.batch})",
            f"ingest with the pairs marked: {rate['marked']:,.0f} points/s, without:"
            f" {rate['plain']:,.0f} points/s = {rate['marked'] / rate['plain']:.2f}x"
            f" (median batch {statistics.median(took['marked']) * 1e3:.1f} ms vs"
            f" {statistics.median(took['plain']) * 1e3:.1f} ms)",
            f"summaries written: {result.periods} hours, {result.points:,} points in"
            f" {summarise_s:.2f} s = {result.points / summarise_s:,.0f} points/s ="
            f" {result.points / summarise_s / rate['marked']:.1f}x the ingest rate",
            f"bytes/point: hypertable compressed {hypertable / points:.1f},"
            f" summaries + dictionary {summaries / points:.2f}",
            f"expire the project's 24 h of values row by row out of compressed chunks:"
            f" {expire_s:.2f} s ({left} hot rows left)",
            f"24 h / 1 h avg: {hot_s * 1e3:.1f} ms from the compressed hypertable,"
            f" {summary_s * 1e3:.1f} ms from the summaries after expiry"
            f" (median of {args.queries})",
        ]
        print("\n".join(lines))
    finally:
        for db in dbs.values():
            await db.close()
        if not args.keep:
            conn = await asyncpg.connect(asyncpg_dsn(url))
            try:
                for schema in schemas.values():
                    await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()
    return 0


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies series counts")
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--queries", type=int, default=9)
    parser.add_argument("--url", default=None)
    parser.add_argument("--keep", action="store_true", help="keep the two schemas")
    return parser.parse_args()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse())))
