"""Cached vs uncached metric query latency through the HTTP API.

Serves the real app (in-memory stores, or Redis for the cache when OPSPILOT_REDIS_URL is set)
on a loopback port, loads 24 h of 1-minute points for 20 series, then times
GET /api/metrics/query for the same past window (a cache hit after the first call) against
windows that differ by one second each time (always a miss, computed by the store).

    .venv/bin/python bench/query_cache.py --requests 300
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import UTC, datetime, timedelta

import aiohttp
from aiohttp import web

from opspilot.container import build_container, start_container, stop_container
from opspilot.domain.ingest import MetricBatch
from opspilot.domain.metrics import MetricPoint
from opspilot.entrypoints.api.app import create_app
from opspilot.entrypoints.assembly import api_services
from opspilot.settings import Settings

START = datetime(2024, 3, 1, tzinfo=UTC)


async def load(container, project_id: str) -> None:  # type: ignore[no-untyped-def]
    store = container.metric_store()
    for series in range(20):
        points = [MetricPoint(project_id, START + timedelta(minutes=m), "latency", float(m % 97),
                              f"svc-{series}") for m in range(1440)]
        await store.write_batches([MetricBatch(f"bench-{series}", project_id, START, points)])


async def timed(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    async with session.get(url, headers=headers) as response:
        await response.read()
        assert response.status == 200, response.status
    return (time.perf_counter() - started) * 1000


def summary(label: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    return f"| {label} | {statistics.median(samples):.2f} | {p95:.2f} |"


async def main(requests: int) -> None:
    settings = Settings(rate_limits_enabled=False, database_url=None, amqp_url=None,
                        opensearch_url=None, ai_url=None)
    container = build_container(settings)
    await start_container(container)
    runner = web.AppRunner(create_app(api_services(container)))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    made = await container.provisioner().create_project("bench")
    await load(container, made.project_id)
    headers = {"Authorization": f"Bearer {made.token}", "X-Project-ID": made.project_id}
    base = (f"http://127.0.0.1:{port}/api/metrics/query?metric_name=latency&service_name=svc-3"
            "&aggregation=p95&time_bucket=5m&start_time=2024-03-01T00:00:00Z")
    try:
        async with aiohttp.ClientSession() as session:
            same = base + "&end_time=2024-03-02T00:00:00Z"
            await timed(session, same, headers)  # fill the cache
            cached = [await timed(session, same, headers) for _ in range(requests)]
            uncached = []
            for i in range(requests):
                end = (START + timedelta(days=1) - timedelta(seconds=i + 1)).isoformat()
                uncached.append(await timed(session, base + "&end_time=" + end.replace("+00:00", "Z"), headers))
    finally:
        await runner.cleanup()
        await stop_container(container)
    cache = container.config.backends()["cache"]
    print(f"cache: {cache}; {requests} requests each; 24 h window, 5 m buckets, p95\n")
    print("| path | median ms | p95 ms |\n|---|---|---|")
    print(summary("cached (same query)", cached))
    print(summary("uncached (window shifted 1 s each time)", uncached))
    print(f"\nratio of medians uncached/cached: {statistics.median(uncached) / statistics.median(cached):.1f}×")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    asyncio.run(main(parser.parse_args().requests))
