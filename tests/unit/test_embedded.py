"""`opspilot.OpsPilot` and `opspilot.web_app` as a host uses them, on in-memory adapters."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web

import opspilot
from opspilot import Log, Metric, OpsPilot
from opspilot.adapters.clock_and_ids import FixedClock
from opspilot.domain.ingest import Stream
from opspilot.domain.metrics import MetricQuery, SeriesSelector
from opspilot.domain.timewindow import Bucketing, TimeRange
from tests.unit.conftest import NOW

ADMIN = "admin-token-of-the-tests-" + "x" * 8  # OPSPILOT_ADMIN_TOKEN: 24 characters or more


@pytest.fixture
async def ops() -> AsyncIterator[OpsPilot]:
    async with OpsPilot.in_memory(clock=FixedClock(NOW), rate_limits_enabled=False,
                                  admin_token=ADMIN) as ops:
        yield ops


async def _new_project(client: Any, name: str) -> dict[str, str]:
    """Through the mounted admin endpoint, with the admin token."""
    made = await client.post("/observability/api/admin/projects", json={"name": name},
                             headers={"Authorization": f"Bearer {ADMIN}"})
    assert made.status == 201, await made.text()
    return dict(await made.json())


async def _project(ops: OpsPilot, name: str = "alpha") -> str:
    return (await ops.create_project(name)).project_id


def _points(n: int, value: float = 10.0) -> list[Metric]:
    return [Metric("latency_ms", value + i, NOW - timedelta(minutes=i), service="api",
                   tags={"region": "eu"}) for i in range(n)]


def _logs(n: int) -> list[Log]:
    return [Log("ERROR" if i % 4 == 0 else "INFO", f"request {i} failed on db" if i % 4 == 0
                else f"request {i} ok", NOW - timedelta(seconds=10 * i + 1), service="api",
                trace_id=f"trace-{i}", context={"i": i}) for i in range(n)]


async def test_what_is_ingested_is_stored_and_queried(ops: OpsPilot) -> None:
    pid = await _project(ops)
    accepted = await ops.ingest_metrics(pid, _points(30))
    await ops.ingest_logs(pid, _logs(40))
    await ops.drain()

    assert accepted.accepted == 30
    series = await ops.query_metrics(pid, "latency_ms", service="api", tags={"region": "eu"},
                                     aggregation="count", time_bucket="1h",
                                     start=NOW - timedelta(hours=1),
                                     end=NOW + timedelta(minutes=1))
    assert isinstance(series, opspilot.Series) and sum(series.values) == 30
    histogram = await ops.histogram(pid, "latency_ms", bins=3,
                                    end=NOW + timedelta(minutes=1))
    assert histogram.total == 30 and len(histogram.bins) == 3
    page = await ops.search_logs(pid, search="db", levels=["error"], limit=3)
    assert page.total == 10 and len(page.records) == 3 and page.next_cursor is not None
    following = await ops.search_logs(pid, search="db", levels=["ERROR"], limit=3,
                                      cursor=page.next_cursor.encode())
    assert following.records[0].timestamp < page.records[-1].timestamp
    context = await ops.log_context(pid, page.records[1].id, before=1, after=1)
    assert context.anchor == page.records[1]
    assert len(context.before) == len(context.after) == 1
    volume = await ops.log_volume(pid, time_bucket="1h", start=NOW - timedelta(hours=1),
                                  end=NOW + timedelta(minutes=1))
    assert sum(b.count for b in volume) == 40
    spikes = await ops.error_spikes(pid)
    assert sum(b.count for b in spikes) == 10
    patterns = await ops.log_patterns(pid)
    assert {(c.pattern, c.count) for c in patterns} == {
        ("request <*> failed on db", 10), ("request <*> ok", 30)}


async def test_anomalies_are_found_in_the_bucketed_series(ops: OpsPilot) -> None:
    pid = await _project(ops)
    points = [Metric("cpu", 900.0 if i == 7 else 50.0 + (i % 3), NOW - timedelta(minutes=i))
              for i in range(60)]
    await ops.ingest_metrics(pid, points)
    await ops.drain()
    found = await ops.anomalies(pid, "cpu", end=NOW + timedelta(minutes=1))
    assert [a.timestamp for a in found] == [NOW - timedelta(minutes=7)]
    assert found[0].value == 900.0


async def test_bad_input_is_refused_naming_the_field(ops: OpsPilot) -> None:
    pid = await _project(ops)
    cases: list[tuple[Callable[[], Awaitable[Any]], str]] = [
        (lambda: ops.ingest_metrics(pid, [Metric("bad name", 1.0, NOW)]), "metrics[0].name"),
        (lambda: ops.ingest_metrics(pid, [*_points(1), Metric("x", float("nan"), NOW)]),
         "metrics[1].value"),
        (lambda: ops.ingest_metrics(pid, [Metric("x", 1.0, NOW.replace(tzinfo=None))]),
         "metrics[0].timestamp"),
        (lambda: ops.ingest_metrics(pid, []), "metrics"),
        (lambda: ops.ingest_metrics(pid, [Metric("x", 1.0, NOW + timedelta(hours=1))]),
         "metrics[0].timestamp"),
        (lambda: ops.ingest_logs(pid, [Log("LOUD", "m", NOW)]), "logs[0].level"),
        (lambda: ops.ingest_logs(pid, [Log("INFO", "", NOW)]), "logs[0].message"),
        (lambda: ops.query_metrics(pid, "x", aggregation="median"), "aggregation"),
        (lambda: ops.query_metrics(pid, "x", time_bucket="5 minutes"), "time_bucket"),
        (lambda: ops.query_metrics(pid, "x", start=NOW, end=NOW - timedelta(hours=1)),
         "end_time"),
        (lambda: ops.search_logs(pid, limit=5000), "limit"),
        (lambda: ops.search_logs(pid, levels=["LOUD"]), "level"),
        (lambda: ops.search_logs(pid, cursor="nonsense"), "cursor"),
        (lambda: ops.log_context(pid, "x", before=500), "before"),
        (lambda: ops.anomalies(pid, "x", threshold=0), "threshold"),
    ]
    for call, field in cases:
        with pytest.raises(opspilot.ValidationError) as caught:
            await call()
        assert caught.value.field == field, (field, caught.value.message)


async def test_a_project_never_sees_another_projects_data(ops: OpsPilot) -> None:
    alpha, beta = await _project(ops, "alpha"), await _project(ops, "beta")
    await ops.ingest_metrics(alpha, _points(5))
    await ops.ingest_logs(alpha, _logs(5))
    await ops.drain()
    alpha_log = (await ops.search_logs(alpha)).records[0]

    assert (await ops.query_metrics(beta, "latency_ms", end=NOW + timedelta(minutes=1))).values == []
    assert (await ops.histogram(beta, "latency_ms")).total == 0
    assert (await ops.search_logs(beta)).total == 0
    assert await ops.log_patterns(beta) == []
    assert sum(b.count for b in await ops.log_volume(beta)) == 0
    with pytest.raises(opspilot.NotFound):
        await ops.log_context(beta, alpha_log.id)
    for call in (
        lambda: ops.ingest_metrics("no-such-project", _points(1)),
        lambda: ops.query_metrics("no-such-project", "latency_ms"),
        lambda: ops.search_logs("no-such-project"),
        lambda: ops.evaluate_rules(project_id="no-such-project"),
    ):
        with pytest.raises(opspilot.NotFound):
            await call()


async def test_rules_fire_incidents_and_stay_in_their_project(ops: OpsPilot) -> None:
    alpha, beta = await _project(ops, "alpha"), await _project(ops, "beta")
    rule = await ops.alerts.create_rule(alpha, opspilot.RuleSpec(
        name="slow", metric_name="latency_ms", threshold=100.0, window=timedelta(minutes=5)))
    await ops.ingest_metrics(alpha, [Metric("latency_ms", 500.0, NOW)])
    await ops.drain()

    report = await ops.evaluate_rules(NOW + timedelta(seconds=1), project_id=alpha)

    assert report.evaluated == 1 and len(report.fired) == 1
    (incident,) = await ops.alerts.list_incidents(alpha)
    assert incident.rule_id == rule.id and incident.status is opspilot.IncidentStatus.OPEN
    assert await ops.alerts.list_incidents(beta) == []
    with pytest.raises(opspilot.NotFound):
        await ops.alerts.get_rule(beta, rule.id)
    acknowledged = await ops.alerts.acknowledge(alpha, incident.id, by="oncall")
    assert acknowledged.status is opspilot.IncidentStatus.ACKNOWLEDGED


async def test_in_memory_ignores_the_environments_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSPILOT_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("OPSPILOT_AMQP_URL", "amqp://nobody@127.0.0.1:1/")
    assert OpsPilot().settings.database_url is not None  # the plain constructor reads them
    async with OpsPilot.in_memory(max_buckets=500) as ops:
        assert set(ops.backends.values()) == {"memory", "in_process"}
        assert ops.settings.max_buckets == 500


async def test_closing_writes_what_was_accepted_and_is_idempotent() -> None:
    """Leaving the context stops the worker only after it wrote what the queue held."""
    ops = await OpsPilot.in_memory(clock=FixedClock(NOW)).start()
    pid = await _project(ops)
    await ops.ingest_metrics(pid, _points(3))
    store, queue = ops.container.metric_store(), ops.container.memory_queue()
    await ops.close()
    await ops.close()
    query = MetricQuery(pid, SeriesSelector("latency_ms"),
                        TimeRange(NOW - timedelta(hours=1), NOW + timedelta(minutes=1)),
                        opspilot.Aggregation.COUNT, Bucketing(timedelta(hours=1)))
    (series,) = await store.query([query])
    assert sum(series.values) == 3
    assert await queue.depth(Stream.METRICS) == 0
    with pytest.raises(RuntimeError):
        ops.container  # noqa: B018


async def test_starting_twice_is_refused(ops: OpsPilot) -> None:
    with pytest.raises(RuntimeError):
        await ops.start()


# -- web_app mounted under a prefix ------------------------------------------------------------


@web.middleware
async def host_stamp(request: web.Request, handler: Any) -> web.StreamResponse:
    response = await handler(request)
    response.headers["X-Host"] = "yes"
    return response


@pytest.fixture
async def host(aiohttp_client: Any, ops: OpsPilot) -> Any:
    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"host": True})

    app = web.Application(middlewares=[host_stamp])  # the host's 1 MiB client_max_size
    app.router.add_get("/hello", hello)
    app.add_subapp("/observability", opspilot.web_app(ops))
    return await aiohttp_client(app)


async def test_the_host_answers_its_routes_and_opspilots(host: Any, ops: OpsPilot) -> None:
    mine = await host.get("/hello")
    assert mine.status == 200 and await mine.json() == {"host": True}
    health = await host.get("/observability/healthz")
    assert health.status == 200 and health.headers["X-Host"] == "yes"
    assert (await host.get("/healthz")).status == 404  # nothing of OpsPilot's at the root

    project = await _new_project(host, "web")
    key = {"X-API-Key": project["api_key"]}
    stamp = NOW.isoformat()
    accepted = await host.post("/observability/api/ingest/metrics", headers=key, json={
        "metrics": [{"name": "m", "value": 1.5, "timestamp": stamp}]})
    assert accepted.status == 202 and accepted.headers["X-Host"] == "yes"
    await ops.drain()
    auth = {"Authorization": f"Bearer {project['token']}", "X-Project-ID": project["project_id"]}
    answer = await host.get("/observability/api/metrics/query", headers=auth,
                            params={"metric_name": "m", "end_time": stamp.replace("12:00", "12:01")})
    assert answer.status == 200
    assert [p["value"] for p in (await answer.json())["points"]] == [1.5]


async def test_errors_keep_opspilots_body_under_the_prefix(host: Any) -> None:
    unknown = await host.get("/observability/api/nothing-here")
    assert unknown.status == 404
    assert (await unknown.json())["error"]["details"]["field"] == "path"
    unauthenticated = await host.post("/observability/api/ingest/logs", json={})
    assert unauthenticated.status == 401
    assert (await unauthenticated.json())["error"]["code"] == "unauthenticated"


async def test_opspilots_body_limit_applies_under_the_prefix(host: Any) -> None:
    project = await _new_project(host, "big")
    line = {"level": "INFO", "message": "x" * 30_000, "timestamp": NOW.isoformat()}
    body = {"logs": [line] * 60}  # ~1.8 MB: over the host's 1 MiB, under OpsPilot's 10 MiB
    accepted = await host.post("/observability/api/ingest/logs", json=body,
                               headers={"X-API-Key": project["api_key"]})
    assert accepted.status == 202, await accepted.text()


async def test_telemetry_and_openapi_name_opspilots_own_paths(host: Any) -> None:
    await host.get("/observability/healthz")
    exposition = await (await host.get("/observability/metrics")).text()
    assert 'route="/healthz"' in exposition
    assert "/observability/healthz" not in exposition
    doc = await (await host.get("/observability/api/openapi.json")).json()
    assert doc["servers"] == [{"url": "/observability"}]
    assert "/api/ingest/metrics" in doc["paths"]
    assert doc["info"]["version"] == opspilot.__version__


async def test_the_explorer_page_lives_under_the_prefix(host: Any) -> None:
    """Its assets are relative and its API calls take the page's prefix (api.js `BASE`);
    the browser check is tests/browser/test_explorer_mounted.py."""
    moved = await host.get("/observability/", allow_redirects=False)
    assert moved.status == 302 and moved.headers["Location"] == "/observability/ui/"
    page = await host.get("/observability/ui/")
    assert page.status == 200 and "OpsPilot Explorer" in await page.text()
    script = await (await host.get("/observability/ui/api.js")).text()
    assert "new URL(BASE + path" in script


async def test_the_root_app_has_no_servers_entry(aiohttp_client: Any, ops: OpsPilot) -> None:
    client = await aiohttp_client(opspilot.web_app(ops))
    doc = await (await client.get("/api/openapi.json")).json()
    assert "servers" not in doc


async def test_rate_limit_headers_survive_the_prefix(aiohttp_client: Any) -> None:
    async with OpsPilot.in_memory(admin_token=ADMIN) as limited:
        app = web.Application()
        app.add_subapp("/observability", opspilot.web_app(limited))
        client = await aiohttp_client(app)
        project = await _new_project(client, "limited")
        answer = await client.post("/observability/api/ingest/logs", json={"logs": []},
                                   headers={"X-API-Key": project["api_key"]})
        assert answer.status == 400
        assert answer.headers["X-RateLimit-Limit"] == "200"


ENGINE_CLIENTS = ("asyncpg", "sqlalchemy", "alembic", "opensearchpy", "aio_pika", "aiormq",
                  "redis")


def test_the_in_memory_shape_imports_no_engine_client() -> None:
    """In memory, OpsPilot (library, mounted API, serve's app) runs without the PostgreSQL,
    OpenSearch, RabbitMQ and Redis clients: what makes them optional extras possible (ADR
    0018). Checked in a fresh interpreter, where nothing else imported them."""
    script = f"""
import asyncio, sys
from datetime import UTC, datetime
import opspilot
from opspilot.entrypoints.self_monitoring import start_self_monitoring

async def main():
    async with opspilot.OpsPilot.in_memory() as ops:
        pid = (await ops.create_project("p")).project_id
        await ops.ingest_logs(pid, [opspilot.Log("ERROR", "boom", datetime.now(UTC))])
        await ops.drain()
        await ops.search_logs(pid)
        opspilot.web_app(ops)
        monitor = start_self_monitoring(ops.container, ops.container.api_telemetry().registry,
                                        worker=True)
        await monitor.stop()

asyncio.run(main())
print(sorted({{name.split(".")[0] for name in sys.modules}} & set({ENGINE_CLIENTS!r})))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSPILOT_")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
