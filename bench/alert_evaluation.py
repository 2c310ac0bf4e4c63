"""One alert tick over 10,000 rules and a day of realistic metric data.

    .venv/bin/python bench/alert_evaluation.py                       # in-memory store
    OPSPILOT_DATABASE_URL=postgresql://… \
        .venv/bin/python bench/alert_evaluation.py --store configured  # the real store

Data: `--series` series (metric × service) of one project, one point a minute for `--hours`
(a daily wave plus noise, a few services in trouble at the end). Rules: `--rules`, spread
evenly over the series, mixing aggregations (avg, max, p95, count), windows (1m-15m),
thresholds around the data (a share of them fire: 300 of 10,000 by default) and a few
no-data rules.

Timed: the first tick (every rule fires or not for the first time: incidents opened) and a
steady-state tick a minute later, each as `AlertScheduler.run_once` (tick lock, chunks of
500 through the queue, one `aggregate_windows` per chunk, states saved, notifications to a
recording notifier). Target: under 5 s per tick.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from dependency_injector import providers

from opspilot.adapters.clock_and_ids import FixedClock
from opspilot.adapters.memory.notify import RecordingNotifier
from opspilot.adapters.memory.scheduling import InMemoryEvaluationQueue, InMemorySchedulerLock
from opspilot.application.alerting import RuleSpec
from opspilot.domain.alerts import ChannelType, Comparator, RuleKind
from opspilot.domain.ingest import MetricBatch
from opspilot.domain.metrics import Aggregation, MetricPoint

NOW = datetime(2024, 3, 2, 0, 0, tzinfo=UTC)
METRICS = ("latency_ms_p95", "error_rate", "cpu_usage", "memory_usage", "request_count")
AGGREGATIONS = (Aggregation.AVG, Aggregation.MAX, Aggregation.P95, Aggregation.COUNT)
WINDOWS = (1, 5, 5, 10, 15)


def series_names(count: int) -> list[tuple[str, str]]:
    services = math.ceil(count / len(METRICS))
    return [(m, f"svc-{s:03d}") for s in range(services) for m in METRICS][:count]


def batches(project: str, series: list[tuple[str, str]], hours: int, seed: int = 11) -> Any:
    rng = random.Random(seed)
    minutes = hours * 60
    start = NOW - timedelta(minutes=minutes)
    for index, (metric, service) in enumerate(series):
        base = 50.0 + (index % 17) * 10
        trouble = index % 25 == 0  # every 25th series spikes in the last 20 minutes
        points = []
        for minute in range(minutes + 2):  # through the steady tick's window
            wave = 0.2 * base * math.sin(2 * math.pi * minute / 1440)
            value = base + wave + rng.gauss(0, base * 0.05)
            if trouble and minute >= minutes - 20:  # and still in trouble
                value *= 3
            points.append(MetricPoint(project, start + timedelta(minutes=minute), metric,
                                      max(0.0, value), service))
        yield MetricBatch(f"bench-{index}", project, NOW, points)


def rule_specs(series: list[tuple[str, str]], count: int, channel_id: str) -> list[RuleSpec]:
    specs = []
    for n in range(count):
        metric, service = series[n % len(series)]
        index = n % len(series)
        aggregation = AGGREGATIONS[(n // len(series)) % len(AGGREGATIONS)]
        window = timedelta(minutes=WINDOWS[n % len(WINDOWS)])
        base = 50.0 + (index % 17) * 10
        threshold = window.total_seconds() / 60 + 1 if aggregation is Aggregation.COUNT \
            else base * (1.5 + (n % 7) / 10)
        kind = RuleKind.NO_DATA if n % 200 == 199 else RuleKind.THRESHOLD
        specs.append(RuleSpec(
            name=f"rule {n}", metric_name=metric, service_name=service, kind=kind,
            window=window, aggregation=aggregation, comparator=Comparator.GT,
            threshold=threshold, channels=(channel_id,) if n % 10 == 0 else (),
        ))
    return specs


async def build(args: argparse.Namespace) -> tuple[Any, str]:
    if args.store == "memory":
        from opspilot.container import build_container, start_container
        from opspilot.settings import Settings

        container = build_container(Settings(_env_file=None, database_url=None, amqp_url=None,
                                             opensearch_url=None, redis_url=None, ai_url=None))
        await start_container(container)
        return container, "in-memory"
    from opspilot.container import build_container, start_container
    from opspilot.settings import Settings

    settings = Settings()
    if settings.database_url:  # a fresh schema, so runs never see each other's rules
        from opspilot.adapters.postgres.migrate import migrate

        args.schema = f"bench_alerts_{uuid.uuid4().hex[:8]}"
        await migrate(settings.database_url, args.schema)
        settings = settings.model_copy(update={"database_schema": args.schema})
    container = build_container(settings)
    await start_container(container)
    return container, container.config.backends()["sql"]


async def execute(url: str, sql: str) -> None:
    """One statement on a connection of its own (schema maintenance around the run)."""
    import asyncpg

    from opspilot.adapters.postgres.database import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def main(args: argparse.Namespace) -> int:
    args.schema = None
    container, label = await build(args)
    try:
        return await run(container, label, args)
    finally:
        from opspilot.container import stop_container

        await stop_container(container)
        if args.schema:
            await execute(container.config.database_url(),
                          f'DROP SCHEMA IF EXISTS "{args.schema}" CASCADE')


async def run(container: Any, label: str, args: argparse.Namespace) -> int:
    project = f"bench-{int(time.time())}"
    series = series_names(args.series)
    started = time.perf_counter()
    store = container.metric_store()
    pending = list(batches(project, series, args.hours))
    for i in range(0, len(pending), 25):
        await store.write_batches(pending[i:i + 25])
    points = sum(len(b.points) for b in pending)
    load_seconds = time.perf_counter() - started
    if args.schema:
        # Statistics as production has them (autovacuum analyzes a loaded partition within
        # a minute or so): without this, whether autovacuum had run yet decided the plan, and
        # runs varied 3 s to 30 s. The 30 s runs were PostgreSQL's JIT compiling every
        # 500-window statement once statistics made its cost estimate high; the pool now
        # turns JIT off (adapters/postgres/database.py).
        await execute(container.config.database_url(), f'ANALYZE "{args.schema}".metrics')

    clock = FixedClock(NOW)
    # the container's alert engine; ticks and chunks in memory (evaluation is measured here,
    # not the tick lock or the broker), notifications recorded
    container.clock.override(providers.Object(clock))
    notifier = RecordingNotifier()
    container.notifier.override(providers.Object(notifier))
    container.scheduler_lock.override(providers.Object(InMemorySchedulerLock()))
    container.evaluation_queue.override(providers.Object(InMemoryEvaluationQueue()))
    alerts = container.alert_rules()
    channel = await alerts.create_channel(project, "ops", ChannelType.WEBHOOK,
                                          "https://hooks.example.com/ops")
    for spec in rule_specs(series, args.rules, channel.id):
        await alerts.create_rule(project, spec)
    scheduler = container.alert_scheduler()

    rows = []
    for name, at in (("first tick", NOW), ("steady tick", NOW + timedelta(minutes=1))):
        clock.current = at
        sent = len(notifier.sent)
        begun = time.perf_counter()
        report = await scheduler.run_once(at)
        rows.append((name, time.perf_counter() - begun, report, len(notifier.sent) - sent))

    print(f"store: {label}; {len(series)} series x {args.hours} h at 1/min = {points:,} points "
          f"(loaded in {load_seconds:.1f} s); {args.rules:,} rules")
    print("| tick | seconds | rules evaluated | incidents opened | resolved | notifications |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, seconds, report, sent in rows:
        print(f"| {name} | {seconds:.2f} | {report.evaluated:,} | {len(report.fired):,} | "
              f"{len(report.resolved):,} | {sent:,} |")
    slowest = max(row[1] for row in rows)
    print(f"target < {args.target:g} s per tick: {'met' if slowest < args.target else 'MISSED'}")
    return 0 if slowest < args.target else 1


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rules", type=int, default=10_000)
    parser.add_argument("--series", type=int, default=500)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--target", type=float, default=5.0)
    parser.add_argument("--store", choices=("memory", "configured"), default="memory",
                        help="configured: the stores OPSPILOT_DATABASE_URL selects")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
