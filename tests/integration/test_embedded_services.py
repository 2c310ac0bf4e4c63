"""`opspilot.OpsPilot` and `opspilot.web_app` on the real services: PostgreSQL, OpenSearch,
RabbitMQ and Redis, each on this test's own schema / index prefix / queue prefix / key
prefix, removed afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import pytest
from aiohttp import web

import opspilot
from opspilot import Log, Metric, OpsPilot, Settings
from opspilot.adapters.opensearch import mapping
from opspilot.adapters.opensearch.store import connect_opensearch
from opspilot.adapters.postgres.database import asyncpg_dsn
from opspilot.adapters.redis.connection import connect_redis
from tests.contract.conftest import database_url_or_skip
from tests.contract.log_fixtures import opensearch_url_or_skip
from tests.contract.queue_fixtures import amqp_url_or_skip, delete_queues
from tests.contract.redis_fixtures import drop_keys, redis_url

T = TypeVar("T")


@pytest.fixture
async def settings() -> AsyncIterator[Settings]:
    tag = uuid.uuid4().hex[:10]
    chosen = Settings(
        database_url=await database_url_or_skip(), database_schema=f"t_lib_{tag}",
        opensearch_url=await opensearch_url_or_skip(), index_prefix=f"t-lib-{tag}-",
        amqp_url=await amqp_url_or_skip(), queue_prefix=f"test-lib-{tag}.",
        redis_url=redis_url(), cache_prefix=f"opspilot-test:lib-{tag}:",
        ai_url=None, worker_flush_seconds=0.05,
    )
    try:
        yield chosen
    finally:
        await _remove(chosen)


async def _remove(s: Settings) -> None:
    assert s.database_url and s.opensearch_url and s.amqp_url and s.redis_url
    conn = await asyncpg.connect(asyncpg_dsn(s.database_url))
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{s.database_schema}" CASCADE')
    finally:
        await conn.close()
    client = await connect_opensearch(s.opensearch_url)
    try:
        with contextlib.suppress(Exception):
            names = await client.indices.get(index=f"{s.index_prefix}*", expand_wildcards="all")
            if names:
                await client.indices.delete(index=",".join(names))
        with contextlib.suppress(Exception):
            await client.indices.delete_index_template(name=mapping.alias_name(s.index_prefix))
    finally:
        await client.close()
    await delete_queues(s.amqp_url, s.queue_prefix)
    redis = await connect_redis(s.redis_url)
    try:
        await drop_keys(redis, s.cache_prefix)
    finally:
        await redis.aclose()


async def _eventually(read: Callable[[], Awaitable[T]], done: Callable[[T], bool],
                      seconds: float = 60.0) -> T:
    """Poll: with RabbitMQ the worker writes shortly after the broker confirmed, and
    OpenSearch shows documents after its refresh (and answers 503, `ServiceUnavailable`,
    until a new index's shards are allocated)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            value = await read()
        except opspilot.ServiceUnavailable:
            if asyncio.get_running_loop().time() > deadline:
                raise
        else:
            if done(value) or asyncio.get_running_loop().time() > deadline:
                return value
        await asyncio.sleep(0.25)


async def test_the_library_ingests_and_queries_through_the_real_services(
    settings: Settings,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    async with OpsPilot(settings) as ops:
        assert ops.backends == {"sql": "postgres", "logs": "opensearch", "queue": "rabbitmq",
                                "cache": "redis", "ai": "in_process"}
        alpha = (await ops.create_project("alpha")).project_id
        beta = (await ops.create_project("beta")).project_id
        await ops.ingest_metrics(alpha, [
            Metric("latency_ms", 100.0 + i, now - timedelta(minutes=i), service="api")
            for i in range(1, 31)])
        await ops.ingest_logs(alpha, [
            Log("ERROR" if i % 5 == 0 else "INFO",
                f"payment {i} failed: card declined" if i % 5 == 0 else f"payment {i} ok",
                now - timedelta(seconds=20 * i), service="api", trace_id=f"tr-{i}")
            for i in range(1, 51)])
        window = {"start": now - timedelta(hours=1), "end": now}

        series = await _eventually(
            lambda: ops.query_metrics(alpha, "latency_ms", service="api", aggregation="count",
                                      time_bucket="1h", **window),
            lambda s: sum(s.values) == 30)
        assert sum(series.values) == 30
        page = await _eventually(
            lambda: ops.search_logs(alpha, search="declined", levels=["ERROR"], **window),
            lambda p: p.total == 10)
        assert page.total == 10 and all(r.project_id == alpha for r in page.records)
        context = await ops.log_context(alpha, page.records[0].id, before=2, after=2)
        assert context.anchor.id == page.records[0].id and len(context.before) == 2
        patterns = await ops.log_patterns(alpha, **window)
        assert {c.pattern: c.count for c in patterns} == {
            "payment <*> ok": 40, "payment <*> failed: card declined": 10}

        # Tenancy: project beta reads nothing of alpha's, through every call.
        assert (await ops.query_metrics(beta, "latency_ms", **window)).values == []
        assert (await ops.search_logs(beta, **window)).total == 0
        assert await ops.log_patterns(beta, **window) == []
        with pytest.raises(opspilot.NotFound):
            await ops.log_context(beta, page.records[0].id)

        rule = await ops.alerts.create_rule(alpha, opspilot.RuleSpec(
            name="slow api", metric_name="latency_ms", service_name="api", threshold=50.0,
            window=timedelta(minutes=10)))
        report = await ops.evaluate_rules(now, project_id=alpha)
        assert report.fired and report.evaluated == 1
        (incident,) = await ops.alerts.list_incidents(alpha)
        assert incident.rule_id == rule.id
        assert await ops.alerts.list_incidents(beta) == []


async def test_closing_writes_the_in_process_queue_into_postgresql(settings: Settings) -> None:
    """PostgreSQL stores with the in-process queue: what was accepted before `close` is in
    the database afterwards (closing drains the queue before stopping the worker)."""
    local = settings.model_copy(update={"amqp_url": None, "opensearch_url": None})
    now = datetime.now(UTC).replace(microsecond=0)
    async with OpsPilot(local) as ops:
        pid = (await ops.create_project("drained")).project_id
        await ops.ingest_metrics(pid, [Metric("cpu", float(i), now - timedelta(seconds=i + 1))
                                       for i in range(500)])
    async with OpsPilot(local, migrate=False) as reopened:
        series = await reopened.query_metrics(pid, "cpu", aggregation="count", time_bucket="1h",
                                              start=now - timedelta(hours=1), end=now)
        assert sum(series.values) == 500


async def test_the_mounted_api_runs_on_the_real_services(
    settings: Settings, aiohttp_client: Any,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    async with OpsPilot(settings) as ops:
        app = web.Application()
        app.add_subapp("/observability", opspilot.web_app(ops))
        client = await aiohttp_client(app)
        ready = await client.get("/observability/readyz")
        assert (await ready.json())["status"] == "ready"
        made = await ops.create_project("mounted")  # in process: the host is the operator
        project = {"project_id": made.project_id, "api_key": made.api_key, "token": made.token}
        accepted = await client.post(
            "/observability/api/ingest/metrics", headers={"X-API-Key": project["api_key"]},
            json={"metrics": [{"name": "rps", "value": 7.0,
                               "timestamp": (now - timedelta(seconds=5)).isoformat()}]})
        assert accepted.status == 202
        auth = {"Authorization": f"Bearer {project['token']}",
                "X-Project-ID": project["project_id"]}

        async def points() -> list[Any]:
            answer = await client.get("/observability/api/metrics/query", headers=auth,
                                      params={"metric_name": "rps", "end_time": now.isoformat()})
            return list((await answer.json())["points"])

        assert [p["value"] for p in await _eventually(points, bool)] == [7.0]
