"""Compact metric tier vs today's raw rows, on the same data in the same run.

    eval "$(scripts/services env)"
    .venv/bin/python bench/postgres_compaction.py                 # ~0.8 M points, a few min
    .venv/bin/python bench/postgres_compaction.py --scale 0.25    # a quick look

Data (one project, `--scale` multiplies the series counts), ending at NOW:
- gauges: 50 series, one point every 10 s for 24 h, 2-decimal values with noise
  (50 + 10·sin + N(0, 3)), timestamps on the second;
- counters: 25 series, every 15 s for 24 h, integers growing by random increments;
- sparse: 25 series, a point every 1–10 min at jittered microsecond timestamps, arbitrary
  floats (lognormal, full precision);
- long: 5 series, one point a minute for 30 days (2-decimal gauges), for the 30 d queries.

Two schemas are migrated: `before` has the raw-row layout (migration 0003's BRIN index on
`metrics.timestamp` dropped: what `main` had before compaction), `after` has it. The same
batches go through `write_batches` into both, alternating batch by batch (ingest rate, the
hot path); every `--compact-every` batches `after` compacts the hours closed so far, as the
job does while agents write (throughput, timed apart but in the same stretch of time as the
ingest it is compared with). The stores' clock reads the last point written (data arrives
live: `after` has a partition an hour around it, `before` the daily ones of before). The
long series' 29 days before the last one are loaded first, a batch an hour, untimed (and
compacted); ingest and compaction are timed over the last day. Then: the raw rows' size (`before`, after VACUUM); VACUUM; the
compacted tier's size (table + indexes + TOAST of blocks, summaries, series dictionary).
Bytes per point per kind come from the rows' own sizes (`pg_column_size`), the totals from
the relations. Queries (median of `--queries` runs, alternating): 24 h / 1 m and
30 d / 1 h, avg and p95, on `before` (raw rows) and `after` (compacted), through the
adapter. The schemas are dropped at the end unless --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import math
import os
import platform
import random
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import add_postgres_options  # noqa: E402

from opspilot.adapters.postgres import compaction  # noqa: E402
from opspilot.adapters.postgres.database import PostgresDatabase, asyncpg_dsn
from opspilot.adapters.postgres.migrate import migrate
from opspilot.domain.ingest import MetricBatch
from opspilot.domain.metrics import Aggregation, MetricPoint, MetricQuery, SeriesSelector
from opspilot.domain.ports import CompactionResult
from opspilot.domain.timewindow import Bucketing, TimeRange

NOW = datetime(2024, 6, 1, tzinfo=UTC)
PROJECT = "00000000-0000-4000-8000-000000000001"
DAY = timedelta(days=1)
KINDS = ("gauge", "counter", "sparse", "long")


def gauge(rng: random.Random, i: int, k: int) -> float:
    return round(50 + 10 * math.sin(i / 360 + k) + rng.gauss(0, 3), 2)


def points_of(kind: str, k: int, rng: random.Random) -> Iterator[MetricPoint]:
    """One series' points, oldest first."""
    tags = {"host": f"h{k % 13}", "region": ("eu", "us")[k % 2]}
    service = f"svc{k % 5}"
    if kind == "gauge":
        start = NOW - DAY
        for i in range(24 * 360):
            yield MetricPoint(PROJECT, start + timedelta(seconds=10 * i), f"cpu_{k}",
                              gauge(rng, i, k), service, tags)
    elif kind == "counter":
        start, total = NOW - DAY, float(rng.randrange(10**6))
        for i in range(24 * 240):
            total += rng.randrange(0, 50)
            yield MetricPoint(PROJECT, start + timedelta(seconds=15 * i), f"requests_{k}",
                              total, service, tags)
    elif kind == "sparse":
        at = NOW - DAY + timedelta(microseconds=rng.randrange(60_000_000))
        while at < NOW:
            yield MetricPoint(PROJECT, at, f"job_seconds_{k}", rng.lognormvariate(2, 1),
                              service, tags)
            at += timedelta(microseconds=rng.randrange(60_000_000, 600_000_000))
    else:
        start = NOW - 30 * DAY
        for i in range(30 * 1440):
            yield MetricPoint(PROJECT, start + timedelta(minutes=i), f"latency_{k}",
                              gauge(rng, i, k), "api", tags)


def dataset(scale: float) -> dict[str, list[MetricPoint]]:
    counts = {"gauge": 50, "counter": 25, "sparse": 25, "long": 5}
    rng = random.Random(3)
    return {kind: [p for k in range(max(1, round(n * scale)))
                   for p in points_of(kind, k, rng)] for kind, n in counts.items()}


def batches(data: dict[str, list[MetricPoint]], size: int
            ) -> tuple[list[list[MetricPoint]], list[list[MetricPoint]]]:
    """Time order across series (as agents send): the history (the long series' days
    before the last one) in a batch an hour, as agents would have sent it live, and the
    last day's points in batches of `size`."""
    everything = sorted((p for kind in KINDS for p in data[kind]), key=lambda p: p.timestamp)
    split = next(i for i, p in enumerate(everything) if p.timestamp >= NOW - DAY)
    history: dict[datetime, list[MetricPoint]] = {}
    for p in everything[:split]:
        history.setdefault(p.timestamp.replace(minute=0, second=0, microsecond=0), []).append(p)
    live = everything[split:]
    return list(history.values()), [live[i:i + size] for i in range(0, len(live), size)]


async def load_history(dbs: dict[str, PostgresDatabase], chunks: list[list[MetricPoint]],
                       clock: list[datetime]) -> None:
    """The long series' earlier days, untimed, into both schemas; `after` compacts them."""
    for number, points in enumerate(chunks):
        clock[0] = points[-1].timestamp
        batch = MetricBatch(f"history-{number}", PROJECT, NOW, points)
        for db in dbs.values():
            await db.metric_store.write_batches([batch])
        if number % 24 == 23:
            await dbs["after"].metric_store.compact(points[-1].timestamp, max_periods=10**6)
    await dbs["after"].metric_store.compact(NOW - DAY, max_periods=10**6)


async def ingest(dbs: dict[str, PostgresDatabase], chunks: list[list[MetricPoint]],
                 compact_every: int, clock: list[datetime]) -> tuple[dict[str, float], Any, float]:
    """Both schemas get every batch (alternating which goes first); every `compact_every`
    batches, `after` compacts the hours closed by then (as the job does while agents
    write), timed apart. Ingest and compaction thus share the same stretch of the loaded
    machine's time. The stores' clock reads the batch's last point (data arrives live).
    Returns the ingest rates, the compaction totals and its seconds."""
    seconds = dict.fromkeys(dbs, 0.0)
    compact_s, totals = 0.0, [0, 0]
    for number, points in enumerate(chunks):
        clock[0] = points[-1].timestamp
        batch = MetricBatch(f"bench-{number}", PROJECT, NOW, points)
        order = list(dbs) if number % 2 == 0 else list(reversed(dbs))
        for name in order:
            t = time.perf_counter()
            await dbs[name].metric_store.write_batches([batch])
            seconds[name] += time.perf_counter() - t
        last = number == len(chunks) - 1
        if last or (number + 1) % compact_every == 0:
            until = NOW if last else chunks[number + 1][0].timestamp
            t = time.perf_counter()
            result = await dbs["after"].metric_store.compact(until, max_periods=10**6)
            compact_s += time.perf_counter() - t
            totals = [totals[0] + result.periods, totals[1] + result.points]
    total = sum(len(c) for c in chunks)
    return ({name: total / s for name, s in seconds.items()},
            CompactionResult(totals[0], totals[1], 0), compact_s)


TIER = ("metric_blocks", "metric_summaries", "metric_series")


async def sizes(conn: Any, tables: tuple[str, ...], schema: str | None = None) -> int:
    """Table + indexes + TOAST of `tables`; `metrics` counts its partitions, in `schema`
    (default: the session's)."""
    if tables == ("metrics",):
        return int(await conn.fetchval(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = coalesce($2, current_schema()) AND c.relkind IN ('r', 'p')"
            " AND (c.relname = ANY($1) OR c.relname LIKE 'metrics\\_%')",
            list(tables), schema))
    return int(await conn.fetchval(
        "SELECT coalesce(sum(pg_total_relation_size(t)), 0) FROM unnest($1::regclass[]) t",
        list(tables)))


async def row_bytes_by_kind(conn: Any) -> dict[str, float]:
    """Bytes of block + summary rows (as stored: compressed, TOAST included) per point."""
    rows = await conn.fetch(
        "SELECT split_part(s.metric_name, '_', 1) AS kind,"
        " sum(pg_column_size(b.*)) AS blocks, sum(pg_column_size(u.*)) AS summaries,"
        " sum(u.n) AS points"
        " FROM metric_series s JOIN metric_blocks b USING (series_id)"
        " JOIN metric_summaries u USING (series_id, period_start) GROUP BY 1")
    return {r["kind"]: (r["blocks"] + r["summaries"]) / r["points"] for r in rows}


async def timed_queries(dbs: dict[str, PostgresDatabase], runs: int
                        ) -> dict[str, dict[str, float]]:
    day = TimeRange(NOW - DAY, NOW)
    month = TimeRange(NOW - 30 * DAY, NOW)
    shapes = {
        "24 h / 1 m": (SeriesSelector("cpu_0", "svc0"), day, "1m"),
        "30 d / 1 h": (SeriesSelector("latency_0", "api"), month, "1h"),
    }
    results: dict[str, dict[str, float]] = {}
    for label, (selector, window, bucket) in shapes.items():
        for agg in (Aggregation.AVG, Aggregation.P95):
            q = MetricQuery(PROJECT, selector, window, agg, Bucketing.parse(bucket))
            answers = {n: await db.metric_store.query([q]) for n, db in dbs.items()}  # warm
            assert answers["before"][0].counts == answers["after"][0].counts, label
            times: dict[str, list[float]] = {n: [] for n in dbs}
            for run in range(runs):
                for name in (list(dbs) if run % 2 == 0 else list(reversed(dbs))):
                    t = time.perf_counter()
                    await dbs[name].metric_store.query([q])
                    times[name].append(time.perf_counter() - t)
            results[f"{label} {agg.value}"] = {n: statistics.median(v) * 1000
                                               for n, v in times.items()}
    return results


async def main(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get("OPSPILOT_DATABASE_URL")
    if not url:
        print("set OPSPILOT_DATABASE_URL (eval \"$(scripts/services env)\")", file=sys.stderr)
        return 2
    began = time.perf_counter()
    data = dataset(args.scale)
    total = sum(len(v) for v in data.values())
    history, chunks = batches(data, args.batch)
    tag = uuid.uuid4().hex[:8]
    schemas = {"before": f"bench_before_{tag}", "after": f"bench_after_{tag}"}
    for schema in schemas.values():
        await migrate(url, schema)
    clock = [history[0][0].timestamp]
    # `before` keeps the daily partitions of before issue #19's third round (an older
    # checkout of the store has no such option: daily is all it has).
    daily = ({"metric_partition": DAY}
             if "metric_partition" in inspect.signature(PostgresDatabase).parameters else {})
    dbs = {n: PostgresDatabase(url, schema=s, now=lambda: clock[0],
                               partitions_past=timedelta(days=40), min_size=1,
                               max_size=args.workers + 1, **(daily if n == "before" else {}))
           for n, s in schemas.items()}
    admin = await asyncpg.connect(asyncpg_dsn(url), server_settings={"timezone": "UTC"})
    try:
        await admin.execute(f'DROP INDEX "{schemas["before"]}".idx_metrics_time_brin')
        for db in dbs.values():
            await db.connect()
            await db.ensure_partitions(NOW - 31 * DAY, NOW)
        print(f"ingesting {total:,} points into both schemas …", file=sys.stderr, flush=True)
        compaction.WORKERS = args.workers
        await load_history(dbs, history, clock)
        rates, result, compact_s = await ingest(dbs, chunks, args.compact_every, clock)
        after = schemas["after"]
        await admin.execute(f'SET search_path TO "{after}"')
        await admin.execute(f'VACUUM ANALYZE "{schemas["before"]}".metrics')
        raw_bytes = await sizes(admin, ("metrics",), schemas["before"])
        await admin.execute("VACUUM ANALYZE metrics")
        await admin.execute("VACUUM ANALYZE metric_blocks")
        await admin.execute("VACUUM ANALYZE metric_summaries")
        await admin.execute("VACUUM ANALYZE metric_series")
        hot_left = await sizes(admin, ("metrics",))
        tier_bytes = await sizes(admin, TIER)
        by_kind = await row_bytes_by_kind(admin)
        print("querying …", file=sys.stderr, flush=True)
        latencies = await timed_queries(dbs, args.queries)
    finally:
        for db in dbs.values():
            await db.close()
        if not args.keep:
            for schema in schemas.values():
                await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()
    counts = {k: len(v) for k, v in data.items()}
    table = report(args, counts, sum(map(len, chunks)), rates, raw_bytes, tier_bytes,
                   hot_left, by_kind, result,
                   compact_s, latencies, time.perf_counter() - began)
    print(table)
    if args.output:
        await asyncio.to_thread(Path(args.output).write_text, table + "\n")
    return 0


def report(args: argparse.Namespace, counts: dict[str, int], live: int,
           rates: dict[str, float],
           raw_bytes: int, tier_bytes: int, hot_left: int, by_kind: dict[str, float],
           result: Any, compact_s: float, latencies: dict[str, dict[str, float]],
           seconds: float) -> str:
    total = sum(counts.values())
    kinds = ", ".join(f"{n:,} {k}" for k, n in counts.items())
    ingest_ratio = rates["after"] / rates["before"]
    lines = [
        f"Points: {total:,} ({kinds}); batches of {args.batch:,}; {args.queries} runs per"
        f" query; run took {seconds / 60:.1f} min; Python {platform.python_version()},"
        f" {os.cpu_count()} cores (shared, loaded). Ingest and compaction are timed over"
        f" the last day's {live:,} points (the long series' 29 days before it arrive a batch"
        " an hour, untimed).",
        "",
        "| measure | today (raw rows) | compacted tier | ratio |",
        "|---|---|---|---|",
        f"| bytes per point on disk (table + indexes + TOAST, after VACUUM) |"
        f" {raw_bytes / total:.1f} | {tier_bytes / total:.2f} |"
        f" {raw_bytes / tier_bytes:.0f}× smaller |",
    ]
    for kind in ("cpu", "requests", "job", "latency"):
        if kind in by_kind:
            name = {"cpu": "gauges 10 s", "requests": "counters 15 s",
                    "job": "sparse, µs-jittered floats", "latency": "gauges 1 min"}[kind]
            lines.append(f"| — rows' bytes per point, {name} | | {by_kind[kind]:.2f} | |")
    lines += [
        f"| hot tier left after compaction + VACUUM (bytes) | | {hot_left:,} | |",
        f"| ingest through the adapter (points/s; BRIN index added) | {rates['before']:,.0f} |"
        f" {rates['after']:,.0f} | {ingest_ratio:.2f}× (target ≥ 0.9×"
        f" {'✅' if ingest_ratio >= 0.9 else '❌'}) |",
        f"| compaction while ingesting ({result.periods:,} hours, every"
        f" {args.compact_every} batches, {args.workers} worker(s); points/s) | |"
        f" {result.points / compact_s:,.0f} | {result.points / compact_s / rates['after']:.1f}×"
        f" the ingest rate |",
    ]
    for label, t in latencies.items():
        lines.append(f"| {label}, median (ms) | {t['before']:.1f} | {t['after']:.1f} |"
                     f" {t['before'] / t['after']:.2f}× faster |")
    return "\n".join(lines)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies series counts")
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--compact-every", type=int, default=10,
                        help="compact the closed hours every N batches while ingesting")
    parser.add_argument("--workers", type=int, default=compaction.WORKERS,
                        help="batches compacted at once (pool connections)")
    parser.add_argument("--queries", type=int, default=15)
    add_postgres_options(parser)
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
