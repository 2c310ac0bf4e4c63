"""PostgreSQL metric store: COPY ingest and query latency, adapter vs raw asyncpg.

    eval "$(scripts/services env)"
    .venv/bin/python bench/postgres_metrics.py                    # 10 M points (long)
    .venv/bin/python bench/postgres_metrics.py --points 500000    # a quick run (~1 min)

Data: `--series` series (10 metric names × 5 services, each point with two tags) of one
project, one point a minute per series, ending at NOW: 10 M points / 50 series = 200,000
minutes ≈ 139 days. Two schemas are migrated identically (daily partitions pre-created in
both, before timing): `write_batches` of `--batch` points goes through the adapter into one
(inbox row + COPY in one transaction, MetricPoint → row conversion included); the same rows,
already as tuples, go with raw `copy_records_to_table` into the other. The two alternate
batch by batch, so the machine's noise hits both alike.

Queries: `--queries` 24 h windows at random offsets, bucket 1 m, avg and p95 of one series
(name + service), all on the adapter's table: through `PostgresMetricStore.query` vs the
hand-written single-series `date_bin` SQL run directly with asyncpg; the adapter's own SQL
is also timed alone (asyncpg, no domain objects) to split SQL from Python overhead. Each
window is read once untimed first, then the three paths run in rotating order, all on the
same single server connection (see `queries`). Peak RSS of the process from
`getrusage`. Targets: adapter ≥ 0.9 × raw COPY rate; query overhead ≤ 1.2 ×.
The schemas are dropped at the end unless --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import resource
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import add_postgres_options  # noqa: E402

from opspilot.adapters.postgres.database import PostgresDatabase, asyncpg_dsn
from opspilot.adapters.postgres.metrics import COLUMNS, read_statement
from opspilot.adapters.postgres.migrate import migrate
from opspilot.domain.ingest import MetricBatch
from opspilot.domain.metrics import Aggregation, MetricPoint, MetricQuery, SeriesSelector
from opspilot.domain.timewindow import Bucketing, TimeRange

NOW = datetime(2024, 6, 1, tzinfo=UTC)
PROJECT = "00000000-0000-4000-8000-000000000001"
NAMES = ("latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "request_count", "throughput",
         "concurrency", "error_rate", "cpu_usage", "memory_usage", "db_connections")
SERVICES = ("api", "web", "worker", "db", "cache")
DIRECT_SQL = {
    "avg": "avg(metric_value)",
    "p95": "percentile_cont(0.95) WITHIN GROUP (ORDER BY metric_value)",
}


def series(count: int) -> list[tuple[str, str]]:
    return [(NAMES[i % len(NAMES)], SERVICES[(i // len(NAMES)) % len(SERVICES)])
            for i in range(count)]


def batches(points: int, n_series: int, size: int, start: datetime) -> Any:
    """Batches of `size` points, minute by minute, every series at each minute."""
    keys = series(n_series)
    rng = random.Random(1)
    tags = [{"region": "eu" if i % 2 else "us", "host": f"h{i % 7}"} for i in range(n_series)]
    current: list[MetricPoint] = []
    for i in range(points):
        minute, s = divmod(i, n_series)
        name, service = keys[s]
        current.append(MetricPoint(PROJECT, start + timedelta(minutes=minute), name,
                                   round(rng.gauss(100, 15), 3), service, tags[s]))
        if len(current) == size:
            yield current
            current = []
    if current:
        yield current


def as_rows(points: list[MetricPoint]) -> list[tuple[Any, ...]]:
    import orjson

    return [(p.project_id, p.timestamp, p.name, p.value, p.service,
             orjson.dumps(p.tags).decode() if p.tags else None) for p in points]


async def ingest(args: argparse.Namespace, db: PostgresDatabase, raw: Any, raw_schema: str,
                 start: datetime) -> dict[str, float]:
    adapter_s = raw_s = 0.0
    done = 0
    for number, points in enumerate(batches(args.points, args.series, args.batch, start)):
        rows = as_rows(points)
        batch = MetricBatch(f"bench-{number}", PROJECT, NOW, points)
        t = time.perf_counter()
        await db.metric_store.write_batches([batch])
        adapter_s += time.perf_counter() - t
        t = time.perf_counter()
        await raw.copy_records_to_table("metrics", records=rows, columns=COLUMNS,
                                        schema_name=raw_schema)
        raw_s += time.perf_counter() - t
        done += len(points)
        if number % 100 == 0:
            print(f"  {done:,} points: adapter {done / adapter_s:,.0f}/s,"
                  f" raw {done / raw_s:,.0f}/s", file=sys.stderr, flush=True)
    return {"points": done, "adapter_rate": done / adapter_s, "raw_rate": done / raw_s,
            "adapter_s": adapter_s, "raw_s": raw_s}


async def queries(args: argparse.Namespace, db: PostgresDatabase,
                  start: datetime) -> dict[str, dict[str, list[float]]]:
    """Every window is read once untimed (so no path pays for a cold cache), then the three
    paths run on the same table in rotating order, all on ONE server connection: the
    adapter's pool is opened with a single connection and the raw paths borrow it
    (`db.connection()`: acquire, fetch, release, as any server would). With a second
    connection for the raw paths, whichever backend had just been idle paid ~1 ms to wake
    on this 2-core machine, which measured the scheduler rather than the adapter."""
    rng = random.Random(2)
    name, service = series(args.series)[1]
    span_hours = max(int((NOW - start).total_seconds() // 3600) - 24, 1)
    timings: dict[str, dict[str, list[float]]] = {
        agg: {"adapter": [], "adapter_sql": [], "direct": []} for agg in DIRECT_SQL}
    for number in range(args.queries):
        window_start = start + timedelta(hours=rng.randrange(span_hours))
        window = TimeRange(window_start, window_start + timedelta(hours=24))
        for agg in DIRECT_SQL:
            q = MetricQuery(PROJECT, SeriesSelector(name, service), window, Aggregation(agg),
                            Bucketing.parse("1m"))
            sql, sql_args = read_statement(
                [(q.project_id, q.series, q.window, q.aggregation, q.bucketing.width)],
                "date_bin")
            direct = (
                "SELECT date_bin('1 minute', \"timestamp\", TIMESTAMPTZ '1970-01-01 00:00:00+00')"
                f" AS bucket, {DIRECT_SQL[agg]} AS value, count(*) AS n FROM metrics"
                " WHERE project_id = $1 AND metric_name = $2 AND service_name = $3"
                ' AND "timestamp" >= $4 AND "timestamp" < $5 GROUP BY 1 ORDER BY 1')
            direct_args = (PROJECT, name, service, window.start, window.end)
            paths = {
                "adapter": lambda q=q: db.metric_store.query([q]),
                "adapter_sql": lambda sql=sql, a=sql_args: fetch(db, sql, a),
                "direct": lambda d=direct, a=direct_args: fetch(db, d, a),
            }
            await paths["direct"]()  # warm the window's pages
            order = list(paths)
            order = order[number % 3:] + order[: number % 3]
            for path in order:
                t = time.perf_counter()
                await paths[path]()
                timings[agg][path].append(time.perf_counter() - t)
    return timings


async def fetch(db: PostgresDatabase, sql: str, args: Any) -> list[Any]:
    async with db.connection() as conn:
        return await conn.fetch(sql, *args)  # type: ignore[no-any-return]


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def report(args: argparse.Namespace, ing: dict[str, float],
           timings: dict[str, dict[str, list[float]]], seconds: float) -> str:
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    copy_ratio = ing["adapter_rate"] / ing["raw_rate"]
    lines = [
        f"Points: {ing['points']:,} ({args.series} series, 1/min, batches of {args.batch:,});"
        f" {args.queries} queries per kind; run took {seconds / 60:.1f} min;"
        f" {platform.python_version()}, {os.cpu_count()} cores.",
        "",
        "| measure | adapter | raw asyncpg | ratio | target | adapter's SQL alone | ratio |",
        "|---|---|---|---|---|---|---|",
        f"| COPY ingest (points/s) | {ing['adapter_rate']:,.0f} | {ing['raw_rate']:,.0f} |"
        f" {copy_ratio:.2f}× | ≥ 0.9× {'✅' if copy_ratio >= 0.9 else '❌'} | | |",
    ]
    for agg, t in timings.items():
        for stat, fn in (("median", statistics.median), ("p95", p95)):
            a, d = fn(t["adapter"]) * 1000, fn(t["direct"]) * 1000
            s = fn(t["adapter_sql"]) * 1000
            ok = "✅" if a / d <= 1.2 else "❌"
            lines.append(f"| 24 h / 1 m {agg}, {stat} (ms) | {a:.2f} | {d:.2f} | {a / d:.2f}× |"
                         f" ≤ 1.2× {ok} | {s:.2f} | {s / d:.2f}× |")
    lines.append(f"| peak RSS of the process (MB) | {rss_mb:,.0f} | | | | | |")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get("OPSPILOT_DATABASE_URL")
    if not url:
        print("set OPSPILOT_DATABASE_URL (eval \"$(scripts/services env)\")", file=sys.stderr)
        return 2
    began = time.perf_counter()
    tag = uuid.uuid4().hex[:8]
    adapter_schema, raw_schema = f"bench_adapter_{tag}", f"bench_raw_{tag}"
    minutes = -(-args.points // args.series)
    start = NOW - timedelta(minutes=minutes)
    past = NOW - start + timedelta(days=2)
    for schema in (adapter_schema, raw_schema):
        await migrate(url, schema)
    db = PostgresDatabase(url, schema=adapter_schema, now=lambda: NOW, partitions_past=past)
    raw_db = PostgresDatabase(url, schema=raw_schema, now=lambda: NOW, partitions_past=past)
    raw = await asyncpg.connect(asyncpg_dsn(url),
                                server_settings={"search_path": raw_schema, "timezone": "UTC"})
    try:
        await db.connect()
        await raw_db.connect()
        for d in (db, raw_db):
            await d.ensure_partitions(start, NOW)
        print(f"ingesting {args.points:,} points …", file=sys.stderr, flush=True)
        ing = await ingest(args, db, raw, raw_schema, start)
        for schema in (adapter_schema, raw_schema):
            await raw.execute(f'ANALYZE "{schema}".metrics')
        print("querying …", file=sys.stderr, flush=True)
        await db.close()
        db = PostgresDatabase(url, schema=adapter_schema, now=lambda: NOW,
                              partitions_past=past, min_size=1, max_size=1)
        await db.connect()
        timings = await queries(args, db, start)
    finally:
        await raw_db.close()
        await db.close()
        if not args.keep:
            for schema in (adapter_schema, raw_schema):
                await raw.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await raw.close()
    table = report(args, ing, timings, time.perf_counter() - began)
    print(table)
    if args.output:
        write_report(Path(args.output), table)
    return 0


def write_report(path: Path, table: str) -> None:
    command = "python bench/postgres_metrics.py " + " ".join(sys.argv[1:])
    path.write_text(
        "# PostgreSQL metric store benchmark\n\n"
        "Command (PostgreSQL 15 from `scripts/services up`):\n\n"
        f"    eval \"$(scripts/services env)\"\n    .venv/bin/{command.strip()}\n\n"
        f"{table}\n"
    )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=10_000_000)
    parser.add_argument("--series", type=int, default=50)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=30)
    add_postgres_options(parser)
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
