"""What the soak, the fault suite and the scaling bench share: request bodies whose every
record carries a value unique to it, the census of what got stored (counted by those values),
process probes from /proc, the worker's gauges, and a least-squares slope.

Metric point `i` of request `n` (size `k`) has value `n*k + i`; log record `i` of request `n`
has correlation id `<tag>-n-i`. A census counts each value / id: 0 is a loss, 2 a duplicate.
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import orjson
from bench.common import LEVELS

METRIC = "soak_latency"
SERVICE = "soak-svc"


def services_from_env() -> dict[str, str]:
    urls = {"database": os.environ.get("OPSPILOT_DATABASE_URL", ""),
            "amqp": os.environ.get("OPSPILOT_AMQP_URL", ""),
            "opensearch": os.environ.get("OPSPILOT_OPENSEARCH_URL", "")}
    if not all(urls.values()):
        raise SystemExit('set the services\' URLs: eval "$(scripts/services env)"')
    if os.environ.get("OPSPILOT_REDIS_URL"):
        urls["redis"] = os.environ["OPSPILOT_REDIS_URL"]
    return urls


def metric_body(number: int, size: int, at: datetime, metric: str = METRIC) -> bytes:
    first = number * size
    return orjson.dumps({"metrics": [
        {"name": metric, "service": SERVICE, "value": float(first + i),
         "timestamp": (at - timedelta(microseconds=size - i)).isoformat()}
        for i in range(size)]})


def log_id(tag: str, number: int, i: int) -> str:
    return f"{tag}-{number}-{i}"


def log_body(number: int, size: int, at: datetime, tag: str = "soak") -> bytes:
    return orjson.dumps({"logs": [
        {"level": LEVELS[(number + i) % len(LEVELS)], "service": SERVICE,
         "message": f"request {number}/{i} handled in {(number * 7 + i) % 900} ms status=200",
         "timestamp": (at - timedelta(microseconds=size - i)).isoformat(),
         "correlation_id": log_id(tag, number, i)}
        for i in range(size)]})


# -- /proc ----------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def slope_per_hour(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (seconds), per hour."""
    if len(xs) < 2:
        return 0.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * 3600


async def worker_gauges(metrics_url: str, *names: str) -> dict[str, float]:
    """`name{labels}` → value for the named families on a worker's /metrics."""
    out: dict[str, float] = {}
    async with aiohttp.ClientSession() as s, s.get(
            metrics_url, timeout=aiohttp.ClientTimeout(total=5)) as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith(names):
            key, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[key] = float(value)
    return out


async def queue_depths(worker: Any) -> dict[str, float]:
    url = worker.ready_url.replace("/healthz", "/metrics")
    try:
        return await worker_gauges(url, "opspilot_queue_depth{",
                                   "opspilot_queue_message_age_seconds{",
                                   "opspilot_worker_utilisation")
    except (aiohttp.ClientError, TimeoutError):
        return {}


# -- what got stored -----------------------------------------------------------------------


@attrs.define
class Counts:
    """The census of one schema / index prefix, straight from the stores (not the API)."""

    urls: dict[str, str]
    schema: str
    index_prefix: str

    async def _pg(self) -> Any:
        import asyncpg

        from opspilot.adapters.postgres.database import asyncpg_dsn

        return await asyncpg.connect(asyncpg_dsn(self.urls["database"]), timeout=10)

    async def points(self, project_id: str) -> int:
        conn = await self._pg()
        try:
            return int(await conn.fetchval(
                f'SELECT count(*) FROM "{self.schema}".metrics WHERE project_id = $1', project_id))
        finally:
            await conn.close()

    async def metric_values(self, project_id: str) -> dict[float, int]:
        conn = await self._pg()
        try:
            rows = await conn.fetch(
                f'SELECT metric_value AS v, count(*) AS n FROM "{self.schema}".metrics'
                " WHERE project_id = $1 GROUP BY 1", project_id)
            return {float(r["v"]): int(r["n"]) for r in rows}
        finally:
            await conn.close()

    async def _os(self, method: str, path: str, body: Any = None) -> Any:
        """One OpenSearch request, tried on each listed node until one answers (a census
        must work while the fault suite has a node down)."""
        nodes = [u.strip().rstrip("/") for u in self.urls["opensearch"].split(",") if u.strip()]
        last: BaseException | None = None
        async with aiohttp.ClientSession() as s:
            for node in nodes:
                try:
                    async with s.request(method, node + path, json=body,
                                         timeout=aiohttp.ClientTimeout(total=60)) as r:
                        if r.status >= 500:
                            raise aiohttp.ClientResponseError(r.request_info, (), status=r.status)
                        return await r.json(content_type=None)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    last = exc
        raise RuntimeError(f"no OpenSearch node answered {path}: {last!r}")

    async def logs(self, project_id: str) -> int:
        await self._os("POST", f"/{self.index_prefix}logs-*/_refresh?allow_no_indices=true")
        doc = await self._os("POST", f"/{self.index_prefix}logs-*/_count?allow_no_indices=true",
                             {"query": {"term": {"project_id": project_id}}})
        return int(doc.get("count", 0))

    async def log_ids(self, project_id: str) -> dict[str, int]:
        """correlation id → documents holding it (composite aggregation, paged)."""
        out: dict[str, int] = {}
        after: dict[str, Any] | None = None
        while True:
            composite: dict[str, Any] = {
                "size": 10_000, "sources": [{"id": {"terms": {"field": "correlation_id"}}}]}
            if after:
                composite["after"] = after
            body = {"size": 0, "query": {"term": {"project_id": project_id}},
                    "aggs": {"ids": {"composite": composite}}}
            doc = await self._os("POST", f"/{self.index_prefix}logs-*/_search"
                                 "?allow_no_indices=true", body)
            if doc.get("_shards", {}).get("failed"):
                raise RuntimeError(f"a partial answer: {doc['_shards']}")
            agg = doc.get("aggregations", {}).get("ids", {})
            for bucket in agg.get("buckets", []):
                out[bucket["key"]["id"]] = int(bucket["doc_count"])
            after = agg.get("after_key")
            if not agg.get("buckets") or not after:
                return out

    async def wait_exact(self, project_id: str, points: int, logs: int,
                         within: float) -> tuple[int, int]:
        """Poll until both counts reach what was accepted (or `within` passes); the counts."""
        import asyncio
        import time

        deadline = time.monotonic() + within
        got = (0, 0)
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                got = (await self.points(project_id), await self.logs(project_id))
                if got[0] >= points and got[1] >= logs:
                    await asyncio.sleep(3)  # late redeliveries would show now
                    return (await self.points(project_id), await self.logs(project_id))
            await asyncio.sleep(1)
        return got

    async def drop(self, queue_prefix: str) -> None:
        with contextlib.suppress(Exception):
            conn = await self._pg()
            await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            await conn.close()
        with contextlib.suppress(Exception):
            await self._os("DELETE", f"/{self.index_prefix}logs-*")
        with contextlib.suppress(Exception):
            await self._os("DELETE", f"/_index_template/{self.index_prefix}logs")
        with contextlib.suppress(Exception):
            from tests.contract.queue_fixtures import delete_queues

            await delete_queues(self.urls["amqp"].split(",")[0], queue_prefix)
