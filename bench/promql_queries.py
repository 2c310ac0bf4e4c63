"""Dashboard PromQL queries: OpsPilot's Prometheus API (PostgreSQL store) vs a real Prometheus,
on the same samples, in the same run.

    eval "$(scripts/services env)"
    .venv/bin/python bench/promql_queries.py --points 10000000      # ~10 M samples (long)
    .venv/bin/python bench/promql_queries.py --points 1000000       # a quicker run

Data: 24 h at a 15 s scrape interval (5,760 samples a series, jittered ±300 ms), `services`
× `instances` targets, each with 4 request counters (code × method, with rare resets), a
12-bucket latency histogram (`request_duration_seconds_bucket`) and a CPU gauge; the number
of instances is chosen so the total is about `--points`. The samples go into a Prometheus
TSDB (`promtool tsdb create-blocks-from openmetrics`, Prometheus 2.42 on port 22020, its own
temporary data directory) and into a fresh PostgreSQL schema through
`PostgresMetricStore.write_batches`; OpsPilot's API serves that schema on port 22021.

Queries (`query_range` over HTTP, Grafana's shape), each run `--runs` times alternating the
two servers so machine noise hits both alike; medians and the ratio are printed, and each
answer is compared (same series, values within 1e-9 relative):
- rate of a counter by service, 6 h at 30 s steps;
- `histogram_quantile(0.95, sum by (le) (rate(..._bucket[5m])))` over 24 h at 120 s steps.
The schema is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import platform
import random
import resource
import statistics
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.promql_peer import (  # noqa: E402
    EPOCH,
    SeriesData,
    difference,
    points,
    prometheus_on,
    sample_count,
)

from opspilot.adapters.postgres.database import PostgresDatabase  # noqa: E402
from opspilot.adapters.postgres.migrate import migrate  # noqa: E402
from opspilot.container import build_container, start_container, stop_container  # noqa: E402
from opspilot.entrypoints.api.app import create_app  # noqa: E402
from opspilot.entrypoints.assembly import api_services  # noqa: E402
from opspilot.settings import Settings  # noqa: E402

START_MS = 1_717_200_000_000  # 2024-06-01T00:00:00Z
DAY_MS = 86_400_000
INTERVAL_MS = 15_000
PROM_PORT, API_PORT = 22020, 22021
KEPT = Path(__file__).resolve().parent / ".promql-kept.json"  # --keep's schema (git-ignored)
LE = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf")
SERVICES = ("api", "web", "checkout", "search", "auth", "billing", "catalog", "cart",
            "payments", "notifications")
PER_TARGET = 4 + len(LE) + 1  # series per (service, instance)


def _times(rng: random.Random) -> list[int]:
    return [START_MS + i * INTERVAL_MS + rng.randint(-300, 300)
            for i in range(DAY_MS // INTERVAL_MS)]


def dataset(total_points: int) -> list[SeriesData]:
    per_series = DAY_MS // INTERVAL_MS
    instances = max(1, round(total_points / per_series / PER_TARGET / len(SERVICES)))
    rng = random.Random(16)
    out: list[SeriesData] = []
    for service in SERVICES:
        for instance in range(instances):
            target = {"instance": f"{service}-{instance}"}
            for code in ("200", "500"):
                for method in ("GET", "POST"):
                    s = SeriesData("http_requests_total", service,
                                   {**target, "code": code, "method": method})
                    s.times = _times(rng)
                    value = rng.uniform(0, 1e4)
                    rate = 40.0 if code == "200" else 1.5
                    for _ in s.times:
                        value = rng.uniform(0, 3) if rng.random() < 0.0002 else value
                        value += rng.expovariate(1 / rate)
                        s.values.append(round(value, 2))
                    out.append(s)
            out.extend(_histogram(rng, service, target))
            cpu = SeriesData("cpu_usage", service, target)
            cpu.times = _times(rng)
            cpu.values = [round(rng.betavariate(2, 5), 4) for _ in cpu.times]
            out.append(cpu)
    return out


def _histogram(rng: random.Random, service: str, target: dict[str, str]) -> list[SeriesData]:
    times = _times(rng)
    bounds = [float(b) for b in LE]
    buckets = [SeriesData("request_duration_seconds_bucket", service, {**target, "le": le},
                          times) for le in LE]
    counts = [0.0] * len(LE)
    for _ in times:
        for _ in range(rng.randint(10, 40)):
            duration = rng.lognormvariate(-2.5, 1.1)
            for i, bound in enumerate(bounds):
                if duration <= bound:
                    counts[i] += 1
        for b, c in zip(buckets, counts, strict=True):
            b.values.append(c)
    return buckets


async def load_postgres(url: str, schema: str, project_id: str, data: list[SeriesData]
                        ) -> float:
    async with PostgresDatabase(url, schema=schema, now=lambda: _at(START_MS)) as db:
        started = time.perf_counter()
        store = db.metric_store
        chunk: list[Any] = []
        for batch in points(data, project_id, per_batch=20_000):
            chunk.append(batch)
            if len(chunk) == 5:
                await store.write_batches(chunk)
                chunk = []
        if chunk:
            await store.write_batches(chunk)
        async with db.connection() as conn:
            await conn.execute("ANALYZE metrics")
        return time.perf_counter() - started


def _at(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def samples_read(data: list[SeriesData], name: str, start: int, end: int) -> int:
    """The samples a query's selector reads: its series' samples in [start - 5m, end]."""
    return sum(bisect.bisect_right(s.times, end) - bisect.bisect_left(s.times, start - 300_000)
               for s in data if s.name == name)


QUERIES = [  # title, query, the metric it reads, start, end, step (s)
    ("rate by service, 6 h / 30 s",
     "sum by (service) (rate(http_requests_total[5m]))", "http_requests_total",
     START_MS + 12 * 3_600_000, START_MS + 18 * 3_600_000, 30),
    ("histogram_quantile p95, 24 h / 120 s",
     "histogram_quantile(0.95, sum by (le) (rate(request_duration_seconds_bucket[5m])))",
     "request_duration_seconds_bucket", START_MS + 300_000, START_MS + DAY_MS, 120),
]


async def compact_all(url: str, schema: str) -> str:
    """Every closed hour into the compacted tier (ADR 0017), as the compaction job would have
    done long before a 24 h dashboard looks at them."""
    started = time.perf_counter()
    async with PostgresDatabase(url, schema=schema, now=lambda: _at(START_MS)) as db:
        moved = 0
        while True:
            result = await db.metric_store.compact(_at(START_MS + 2 * DAY_MS))
            moved += result.points
            if result.backlog == 0:
                break
        async with db.connection() as conn:
            await conn.execute("ANALYZE")
    return f"{moved:,} points compacted in {time.perf_counter() - started:.0f} s"


def _remember(schema: str, project_id: str, token: str, points: int) -> None:
    """--keep writes where the loaded data is (the bench's own throwaway project and token,
    readable by this user only) so that --reuse can skip the long load."""
    KEPT.touch(mode=0o600)
    KEPT.write_text(json.dumps({"schema": schema, "project_id": project_id, "token": token,
                                "points": points}))
    print(f"kept schema {schema} (see {KEPT.name}; --reuse to query it again)")


def _reused(reuse: bool) -> dict[str, Any] | None:
    if not reuse:
        return None
    kept: dict[str, Any] = json.loads(KEPT.read_text())
    print(f"reusing schema {kept['schema']} ({kept['points']:,} points asked for)")
    return kept


async def timed(session: aiohttp.ClientSession, url: str, headers: dict[str, str],
                params: dict[str, str]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    async with session.post(url + "/api/v1/query_range", data=params, headers=headers) as r:
        body = await r.json()
    return time.perf_counter() - started, body


async def run(args: argparse.Namespace) -> None:
    url = os.environ.get("OPSPILOT_DATABASE_URL")
    if not url:
        sys.exit("OPSPILOT_DATABASE_URL is not set: eval \"$(scripts/services env)\"")
    t0 = time.perf_counter()
    data = dataset(args.points)
    total = sample_count(data)
    print(f"data: {len(data):,} series, {total:,} samples, generated in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    reads = {q[0]: samples_read(data, q[2], q[3], q[4]) for q in QUERIES}
    reused = _reused(args.reuse)
    schema = reused["schema"] if reused else f"bench_promql_{uuid.uuid4().hex[:8]}"
    if not reused:
        await migrate(url, schema)
    settings = Settings(_env_file=None, database_url=url, database_schema=schema,
                        opensearch_url=None, amqp_url=None, redis_url=None, ai_url=None,
                        rate_limits_enabled=False, promql_max_samples=args.max_samples)
    container = build_container(settings)
    await start_container(container)
    # Everything the API imports is imported now, before the long load.
    runner = web.AppRunner(create_app(api_services(container)))
    await runner.setup()
    try:
        if reused:
            project_id, token = reused["project_id"], reused["token"]
        else:
            made = await container.provisioner().create_project("bench-promql")
            project_id, token = made.project_id, made.token
            seconds = await load_postgres(url, schema, project_id, data)
            print(f"PostgreSQL: {total:,} samples written in {seconds:.0f} s", flush=True)
            if args.keep:
                _remember(schema, project_id, token, args.points)
        if args.compact:
            print(f"compacted tier: {await compact_all(url, schema)}", flush=True)
        t0 = time.perf_counter()
        async with prometheus_on(data, args.prom_port) as prom_url:
            print(f"Prometheus: blocks built and server ready in {time.perf_counter() - t0:.0f} s",
                  flush=True)
            del data
            await web.TCPSite(runner, "127.0.0.1", args.api_port).start()
            headers = {"Authorization": f"Bearer {token}", "X-Project-ID": project_id}
            await compare(prom_url, f"http://127.0.0.1:{args.api_port}", headers, args.runs, reads)
    finally:
        await runner.cleanup()
        await stop_container(container)
        if not args.keep and not reused:
            async with PostgresDatabase(url, schema=schema) as db, db.connection() as conn:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {rss:,.0f} MiB; {platform.python_implementation()} "
          f"{platform.python_version()}, {os.cpu_count()} CPUs (shared, loaded)")


async def compare(prom_url: str, api_url: str, headers: dict[str, str], runs: int,
                  reads: dict[str, int]) -> None:
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        print("\n| query | Prometheus median | OpsPilot median | ratio | samples read | agree |")
        print("|---|---|---|---|---|---|")
        for title, query, _, start, end, step in QUERIES:
            params = {"query": query, "start": str(start / 1000), "end": str(end / 1000),
                      "step": str(step)}
            theirs: list[float] = []
            ours: list[float] = []
            answers: dict[str, Any] = {}
            for _ in range(runs):
                took, answers["prometheus"] = await timed(session, prom_url, {}, params)
                theirs.append(took)
                took, answers["opspilot"] = await timed(session, api_url, headers, params)
                ours.append(took)
            problem = difference(answers["prometheus"], answers["opspilot"])
            p, o = statistics.median(theirs), statistics.median(ours)
            print(f"| {title} | {p * 1000:,.0f} ms | {o * 1000:,.0f} ms | {o / p:,.0f}x | "
                  f"{reads[title]:,} | {'yes' if problem is None else problem} |",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-samples", type=int, default=20_000_000,
                        help="OPSPILOT_PROMQL_MAX_SAMPLES for the run")
    parser.add_argument("--keep", action="store_true", help="keep the schema")
    parser.add_argument("--reuse", action="store_true",
                        help="query the schema a --keep run left (same --points) instead of "
                             "loading PostgreSQL again")
    parser.add_argument("--compact", action="store_true",
                        help="compact every closed hour before querying (the reads then go to "
                             "the compacted tier, as for data older than an hour or so)")
    parser.add_argument("--prom-port", type=int, default=PROM_PORT)
    parser.add_argument("--api-port", type=int, default=API_PORT)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
