"""End-to-end ingest throughput: HTTP client → `opspilot api` → RabbitMQ → `opspilot worker`
→ PostgreSQL (metrics) / OpenSearch + PostgreSQL (logs), against the raw write rate of the
same rows into the same stores in the same run.

    eval "$(scripts/services env)"
    .venv/bin/python bench/pipeline_ingest.py --points 200000 --logs 50000 --clients 4

What is measured:
- metrics, end to end: the wall time from the first POST until every accepted point is
  visible to a query (count(*) of the project's rows in `<schema>.metrics`, polled every
  0.1 s); requests of 1000 points, `--clients` concurrent HTTP clients; one API process and
  `--workers` worker processes, started fresh on a new schema / index / queue prefix.
- metrics, raw: asyncpg `copy_records_to_table` of the same rows (another project id), 1000
  rows per COPY on one connection, into the same partitioned table (same indexes).
- logs, end to end: as for metrics, until OpenSearch's `_count` for the project equals the
  records sent (refresh_interval 1 s, as in production); the worker also writes the logs'
  metadata rows to PostgreSQL.
- logs, raw: `opensearchpy.helpers.async_bulk` (chunk_size 1000) of the same documents
  (`mapping.to_document`) into a second index prefix with the same template.
- the API's and the worker's peak RSS: VmHWM in /proc/<pid>/status just before they stop.

Rate limits are switched off for the run (OPSPILOT_RATE_LIMITS_ENABLED=false); everything
else is at its defaults. The schema, indices, templates and queues are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import BATCH, LEVELS, batched, cleanup  # noqa: E402
from bench.harness import services_from_env  # noqa: E402
from tests.integration.test_pipeline_e2e import (  # noqa: E402
    BIN,
    IngestLog,
    Proc,
    Stack,
    post_with_retries,
)

from opspilot.adapters.opensearch import mapping  # noqa: E402
from opspilot.adapters.opensearch.store import OpenSearchLogStore, connect_opensearch  # noqa: E402
from opspilot.adapters.postgres.database import asyncpg_dsn  # noqa: E402
from opspilot.adapters.postgres.metrics import COLUMNS  # noqa: E402
from opspilot.domain.logs import LogLevel, LogRecord  # noqa: E402


def metric_points(n: int, base: datetime) -> list[dict[str, Any]]:
    return [{"name": f"bench_m{i % 10}", "service": f"svc-{i % 5}", "value": float(i),
             "timestamp": (base + timedelta(milliseconds=i)).isoformat(),
             "tags": {"host": f"h{i % 20}"}} for i in range(n)]


def log_items(n: int, base: datetime) -> list[dict[str, Any]]:
    return [{"level": LEVELS[i % len(LEVELS)], "service": f"svc-{i % 5}",
             "message": f"request {i} handled by worker {i % 7} in {i % 900} ms status=200",
             "timestamp": (base + timedelta(milliseconds=i * 10)).isoformat(),
             "trace_id": f"t{i // 10}"} for i in range(n)]


async def send_all(base_url: str, path: str, key: str, bodies: list[bytes], clients: int,
                   seen: IngestLog) -> None:
    todo = iter(enumerate(bodies))

    async def client(session: aiohttp.ClientSession) -> None:
        for number, body in todo:
            await post_with_retries(session, base_url + path, body, key, number, seen)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))


async def wait_until(count: Any, target: int, within: float) -> float:
    deadline = time.perf_counter() + within
    while True:
        if await count() >= target:
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise SystemExit(f"timed out: {await count()} of {target} visible")
        await asyncio.sleep(0.1)


async def end_to_end(label: str, base_url: str, path: str, key: str, bodies: list[bytes],
                     clients: int, expected: int, count: Any) -> dict[str, float]:
    seen = IngestLog()
    started = time.perf_counter()
    await send_all(base_url, path, key, bodies, clients, seen)
    sent = time.perf_counter()
    if seen.failed:
        raise SystemExit(f"{label}: requests failed: {list(seen.failed.items())[:3]}")
    if seen.accepted_points != expected:
        raise SystemExit(f"{label}: accepted {seen.accepted_points} of {expected}")
    visible = await wait_until(count, expected, 600)
    return {"accepted_s": sent - started, "visible_s": visible - started,
            "rate": expected / (visible - started), "accept_rate": expected / (sent - started),
            "status": seen.status_counts}  # type: ignore[dict-item]


async def raw_copy(dsn: str, schema: str, rows: list[tuple[Any, ...]]) -> float:
    conn = await asyncpg.connect(dsn, server_settings={"search_path": f'"{schema}", public'})
    try:
        started = time.perf_counter()
        for chunk in batched(rows):
            await conn.copy_records_to_table("metrics", records=chunk, columns=COLUMNS)
        return len(rows) / (time.perf_counter() - started)
    finally:
        await conn.close()


async def raw_bulk(os_url: str, prefix: str, records: list[LogRecord]) -> float:
    from opensearchpy.helpers import async_bulk

    client = await connect_opensearch(os_url)
    try:
        await OpenSearchLogStore(client, prefix=prefix).ensure_template()
        actions = [{"_op_type": "index", "_index": mapping.index_for(prefix, r.timestamp),
                    "_id": mapping.document_id(r), "_source": mapping.to_document(r)}
                   for r in records]
        started = time.perf_counter()
        await async_bulk(client, actions, chunk_size=BATCH, max_retries=3, raise_on_error=True)
        # same visibility criterion as the pipeline: the documents count (refresh 1 s)
        async def counted() -> int:
            doc = await client.count(index=mapping.index_pattern(prefix))
            return int(doc["count"])

        done = await wait_until(counted, len(records), 300)
        return len(records) / (done - started)
    finally:
        await client.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--logs", type=int, default=50_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    urls = services_from_env()
    tag = uuid.uuid4().hex[:8]
    stack = Stack(urls, f"bench_{tag}", f"bench-{tag}-", f"bench-{tag}.", f"bench:{tag}:",
                  Path(tempfile.mkdtemp(prefix="pipeline-bench-")),
                  extra_env={"OPSPILOT_RATE_LIMITS_ENABLED": "false"})
    raw_prefix = f"bench-{tag}-raw-"
    dsn = asyncpg_dsn(urls["database"])
    env = {**stack.env()}
    await asyncio.to_thread(subprocess.run, [str(BIN), "migrate"], env=env, check=True,
                            capture_output=True, timeout=300)
    try:
        project = stack.create_project("bench-pipeline")
        raw_project = f"raw-{tag}"
        api, base_url = await stack.start_api()
        workers: list[Proc] = [await stack.start_worker() for _ in range(args.workers)]
        now = datetime.now(UTC)

        # -- metrics ---------------------------------------------------------------------
        points = metric_points(args.points, now - timedelta(hours=2))
        bodies = [orjson.dumps({"metrics": chunk}) for chunk in batched(points)]
        conn = await asyncpg.connect(dsn)

        async def metric_count() -> int:
            return int(await conn.fetchval(
                f'SELECT count(*) FROM "{stack.schema}".metrics WHERE project_id = $1',
                project.project_id))

        metrics = await end_to_end("metrics", base_url, "/api/ingest/metrics", project.api_key,
                                   bodies, args.clients, args.points, metric_count)
        rows = [(raw_project, datetime.fromisoformat(p["timestamp"]), p["name"], p["value"],
                 p["service"], orjson.dumps(p["tags"]).decode()) for p in points]
        copy_rate = await raw_copy(dsn, stack.schema, rows)
        # a query through the API sees them too
        async with aiohttp.ClientSession() as s, s.get(
            base_url + "/api/metrics/query", headers=project.query_headers(),
            params={"metric_name": "bench_m0", "aggregation": "count", "time_bucket": "1d",
                    "start_time": (now - timedelta(hours=3)).isoformat(),
                    "end_time": (now + timedelta(minutes=1)).isoformat()}) as r:
            doc = await r.json()
        api_seen = sum(p["value"] for p in doc["points"])
        if api_seen != args.points // 10:
            raise SystemExit(f"API query saw {api_seen} bench_m0 points, not {args.points // 10}")

        # -- logs ------------------------------------------------------------------------
        items = log_items(args.logs, now - timedelta(hours=1))
        log_bodies = [orjson.dumps({"logs": chunk}) for chunk in batched(items)]
        client = await connect_opensearch(urls["opensearch"])

        async def log_count() -> int:
            doc = await client.count(index=mapping.index_pattern(stack.index_prefix),
                                     body={"query": {"term": {"project_id": project.project_id}}},
                                     allow_no_indices=True)
            return int(doc["count"])

        logs = await end_to_end("logs", base_url, "/api/ingest/logs", project.api_key,
                                log_bodies, args.clients, args.logs, log_count)
        await client.close()
        records = [LogRecord(f"raw-{i}", raw_project, datetime.fromisoformat(x["timestamp"]),
                             LogLevel.parse(x["level"]), x["message"], x["service"], x["trace_id"])
                   for i, x in enumerate(items)]
        bulk_rate = await raw_bulk(urls["opensearch"], raw_prefix, records)

        api_rss = api.peak_rss_kib()
        worker_rss = [w.peak_rss_kib() for w in workers]
        await conn.close()
    finally:
        stack.stop_all()
        await cleanup(stack, raw_prefix, dsn)

    mib = lambda kib: f"{(kib or 0) / 1024:,.0f} MiB"  # noqa: E731
    print()
    print(f"| measure | metrics ({args.points:,} points) | logs ({args.logs:,} records) |")
    print("|---|---:|---:|")
    print(f"| end to end, first POST → all visible (s) | {metrics['visible_s']:.2f} | {logs['visible_s']:.2f} |")
    print(f"| end to end rate (records/s) | {metrics['rate']:,.0f} | {logs['rate']:,.0f} |")
    print(f"| API accept rate, all 202s (records/s) | {metrics['accept_rate']:,.0f} | {logs['accept_rate']:,.0f} |")
    print(f"| raw store rate (records/s) | {copy_rate:,.0f} (asyncpg COPY) | {bulk_rate:,.0f} (async_bulk) |")
    print(f"| end to end / raw | {metrics['rate'] / copy_rate:.2f} | {logs['rate'] / bulk_rate:.2f} |")
    print(f"| HTTP statuses seen | {metrics['status']} | {logs['status']} |")
    print(f"| peak RSS (VmHWM): API | {mib(api_rss)} | (same process) |")
    print(f"| peak RSS (VmHWM): worker(s) | {', '.join(mib(w) for w in worker_rss)} | (same process) |")
    print(f"\nclients={args.clients} workers={args.workers} batch={BATCH} cores={os.cpu_count()}")


if __name__ == "__main__":
    asyncio.run(main())
