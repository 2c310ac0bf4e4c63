"""Percentiles from histogram buckets on PostgreSQL: the per-export reading (what
`/api/metrics/query?aggregation=p95` runs, MetricStore.bucket_increases) beside the per-`le`
counter reading it replaced (each bound's increase on its own, Prometheus' reading of fixed
bounds; rebuilt here from the store's growth statement), on the same rows in the same run.

    eval "$(scripts/services env)"
    .venv/bin/python bench/histogram_percentiles.py              # ~0.7 M bucket rows
    .venv/bin/python bench/histogram_percentiles.py --series 3   # a quick look

Data, ending at NOW, in one fresh schema: `--series` histogram series (routes) with 11
fixed bounds + `+Inf`, one cumulative export every 15 s for 24 h, each export adding
20-80 lognormal latencies; and as many series of an exponential histogram exported with
delta temporality, each export holding either fast (~2 ms) or slow (~500 ms) requests,
so that exports of one bucket of time reach different bounds (a service with a cache: an
export interval of only hits, the next of misses). Queries (median
of `--runs`, alternating the two readings): 24 h / 5 m and 1 h / 1 m. The fixed-bound
answers must be equal between the two readings (checked); on the exponential histogram
they differ, which is the point of the change: the p50 each gives is printed beside the
true one from the observations.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import statistics
import sys
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opspilot.adapters.postgres import metrics as pg  # noqa: E402
from opspilot.adapters.postgres.database import PostgresDatabase, asyncpg_dsn
from opspilot.adapters.postgres.migrate import migrate
from opspilot.domain.ingest import MetricBatch
from opspilot.domain.metrics import (
    Aggregation,
    MetricPoint,
    MetricQuery,
    SeriesSelector,
    histogram_quantile,
)
from opspilot.domain.timewindow import Bucketing, TimeRange

NOW = datetime(2024, 6, 1, tzinfo=UTC)
PROJECT = "00000000-0000-4000-8000-000000000001"
FIXED = [5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0]
DELTA = {"__temporality__": "delta"}

# The reading that was replaced: each `le` series' growths summed per bucket of time.
PER_LE_SQL = (
    f"SELECT g.tags->>'le' AS grp, date_bin(q.width, g.ts, {pg.EPOCH}) AS bucket,"
    f" sum({pg._GROWTH}) AS value, count(*) AS n"
    f" FROM {pg._selectors(1, False)} CROSS JOIN LATERAL ({pg.GROWTHS_SQL}) g"
    f" WHERE {pg._GROWN} AND g.tags ? 'le' GROUP BY 1, 2 ORDER BY 1, 2")


def fixed_points(series: int, rng: random.Random) -> list[MetricPoint]:
    points = []
    for s in range(series):
        counts = [0] * (len(FIXED) + 1)
        at = NOW - timedelta(hours=24)
        while at < NOW:
            for _ in range(rng.randint(20, 80)):
                value = rng.lognormvariate(4.0 + 0.1 * s, 0.8)
                index = next((i for i, b in enumerate(FIXED) if value <= b), len(FIXED))
                for i in range(index, len(counts)):
                    counts[i] += 1
            for bound, count in zip([*FIXED, math.inf], counts, strict=True):
                le = "+Inf" if bound == math.inf else f"{bound:g}"
                points.append(MetricPoint(PROJECT, at, "fixed_bucket", float(count), "api",
                                          {"route": f"/r{s}", "le": le}))
            at += timedelta(seconds=15)
    return points


def exponential_points(series: int, rng: random.Random
                       ) -> tuple[list[MetricPoint], dict[datetime, list[float]]]:
    """Delta exports at scale 3 of only the buckets they reach, each of fast or slow
    requests. Returns the points and each 5-minute bucket's observations."""
    base = 2.0 ** (2.0 ** -3)
    points, observed = [], defaultdict(list)
    for s in range(series):
        at = NOW - timedelta(hours=24)
        while at < NOW:
            centre = 2.0 if rng.random() < 0.5 else 500.0
            values = [rng.lognormvariate(math.log(centre), 0.3) for _ in range(40)]
            observed[Bucketing.parse("5m").floor(at)].extend(values)
            indexes = [math.ceil(math.log(v, base)) - 1 for v in values]
            low, high = min(indexes), max(indexes)
            running = 0
            for index in range(low, high + 1):
                running += indexes.count(index)
                points.append(MetricPoint(PROJECT, at, "exp_bucket", float(running), "api",
                                          {**DELTA, "route": f"/r{s}",
                                           "le": repr(base ** (index + 1))}))
            points.append(MetricPoint(PROJECT, at, "exp_bucket", float(running), "api",
                                      {**DELTA, "route": f"/r{s}", "le": "+Inf"}))
            at += timedelta(seconds=15)
    return points, observed


async def per_le(db: PostgresDatabase, query: MetricQuery) -> dict[str, dict[datetime, float]]:
    args = pg._selector_row(0, (query.project_id, query.series, query.window,
                                query.aggregation, query.bucketing.width))
    async with db.connection() as conn:
        rows = await conn.fetch(PER_LE_SQL, *args)
    found: dict[str, dict[datetime, float]] = defaultdict(dict)
    for le, bucket, value, _ in rows:
        found[le][bucket] = value
    return found


async def per_export(store: pg.PostgresMetricStore, query: MetricQuery
                     ) -> dict[str, dict[datetime, float]]:
    return {le: dict(zip(s.buckets, s.values, strict=True))
            for le, s in (await store.bucket_increases(query)).items()}


def p50s(by_le: dict[str, dict[datetime, float]]) -> dict[datetime, float | None]:
    per_bucket: dict[datetime, list[tuple[float, float]]] = defaultdict(list)
    for le, values in by_le.items():
        for bucket, value in values.items():
            per_bucket[bucket].append((float(le), value))
    return {b: histogram_quantile(0.5, bounds) for b, bounds in sorted(per_bucket.items())}


async def main(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get("OPSPILOT_DATABASE_URL")
    if not url:
        print("set OPSPILOT_DATABASE_URL (eval \"$(scripts/services env)\")", file=sys.stderr)
        return 2
    rng = random.Random(7)
    fixed = fixed_points(args.series, rng)
    exponential, observed = exponential_points(args.series, rng)
    schema = f"bench_hist_{uuid.uuid4().hex[:8]}"
    await migrate(url, schema)
    db = PostgresDatabase(url, schema=schema, now=lambda: NOW, min_size=1, max_size=2)
    await db.connect()
    store = pg.PostgresMetricStore(db)
    try:
        await db.ensure_partitions(NOW - timedelta(days=2), NOW)
        all_points = fixed + exponential
        print(f"writing {len(all_points):,} bucket rows …", file=sys.stderr, flush=True)
        for i in range(0, len(all_points), 20_000):
            await store.write_batches([MetricBatch(f"b{i}", PROJECT, NOW,
                                                   all_points[i:i + 20_000])])
        async with db.connection() as conn:
            await conn.execute("VACUUM ANALYZE metrics")
        rows = []
        for name, span, width in (("fixed_bucket", timedelta(hours=24), "5m"),
                                  ("fixed_bucket", timedelta(hours=1), "1m"),
                                  ("exp_bucket", timedelta(hours=24), "5m")):
            query = MetricQuery(PROJECT, SeriesSelector(name), TimeRange(NOW - span, NOW),
                                Aggregation.P50, Bucketing.parse(width))
            times: dict[str, list[float]] = {"per export": [], "per le": []}
            answers: dict[str, Any] = {}
            for _ in range(args.runs):
                for label, read in (("per export", per_export(store, query)),
                                    ("per le", per_le(db, query))):
                    began = time.perf_counter()
                    answers[label] = await read
                    times[label].append(time.perf_counter() - began)
            new, old = p50s(answers["per export"]), p50s(answers["per le"])
            if name == "fixed_bucket":
                assert new == old, "fixed bounds: the two readings must agree"
                note = "answers equal"
            else:
                wrong = [b for b in new if _off(new[b], observed[b]) > _off(old[b], observed[b])]
                note = (f"p50 relative error, median over buckets: per export "
                        f"{_median_error(new, observed):.1%}, per le "
                        f"{_median_error(old, observed):.1%} (per export worse in"
                        f" {len(wrong)} of {len(new)})")
            a, b = statistics.median(times["per export"]), statistics.median(times["per le"])
            rows.append(f"| {name} {span.total_seconds() / 3600:g} h / {width} | "
                        f"{a * 1000:,.0f} ms | {b * 1000:,.0f} ms | {a / b:.2f}× | {note} |")
    finally:
        await db.close()
        if not args.keep:
            conn = await asyncpg.connect(asyncpg_dsn(url))
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await conn.close()
    print(f"{len(fixed):,} fixed-bound and {len(exponential):,} exponential bucket rows,"
          f" {args.series} series each, median of {args.runs} runs\n")
    print("| query | per export (now) | per le (before) | ratio | answers |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


def _off(answer: float | None, values: list[float]) -> float:
    true = statistics.median(values)
    return math.inf if answer is None else abs(answer - true) / true


def _median_error(p50: dict[datetime, float | None], observed: dict[datetime, list[float]]
                  ) -> float:
    return statistics.median(_off(v, observed[b]) for b, v in p50.items())


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--url", default=None)
    parser.add_argument("--keep", action="store_true")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
