"""Self-monitoring without services: label caps, query latency by kind, the store exporters
on fakes, the queue depth sampler on the in-memory queue, and the sampling task."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from opspilot.adapters.memory.queue import InMemoryQueue
from opspilot.adapters.prometheus.api import QUERY_KINDS, ApiTelemetry, ProjectLabels
from opspilot.adapters.prometheus.exporters import (
    ExporterHealth,
    OpenSearchExporter,
    PoolCollector,
    PostgresExporter,
    QueueDepthSampler,
)
from opspilot.adapters.prometheus.monitoring import refresh_once
from opspilot.adapters.prometheus.serving import include_registries
from opspilot.adapters.prometheus.worker import WorkerTelemetry
from opspilot.container import Container
from opspilot.domain.ingest import Stream
from opspilot.entrypoints.self_monitoring import start_self_monitoring
from tests.unit.conftest import Tenant, drain


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


# -- label caps and query kinds ------------------------------------------------------------


def test_project_labels_are_capped_and_stable() -> None:
    label = ProjectLabels(cap=3)
    assert [label(p) for p in ("a", "b", "c")] == ["a", "b", "c"]
    assert label("d") == "other"
    assert label("e") == "other"
    assert label("a") == "a"  # a project seen before the cap keeps its own label


async def test_ingest_counts_past_the_cap_go_to_other(api: Any, container: Container) -> None:
    telemetry = container.api_telemetry()
    telemetry.project_label = ProjectLabels(cap=1)
    tenants = [await container.provisioner().create_project(f"p{i}") for i in range(3)]
    point = {"name": "cpu", "value": 1.0, "service": "api", "timestamp": "2024-03-01T11:00:00Z"}
    for made in tenants:
        response = await api.post("/api/ingest/metrics", json={"metrics": [point]},
                                  headers={"X-API-Key": made.api_key})
        assert response.status == 202
    projects = {
        s.labels["project"] for m in telemetry.registry.collect()
        if m.name == "opspilot_ingest_accepted" for s in m.samples
        if s.name.endswith("_total")
    }
    assert projects == {tenants[0].project_id, "other"}


def test_query_latency_is_observed_for_query_routes_only() -> None:
    telemetry = ApiTelemetry()
    telemetry.query_answered("/api/metrics/query", 200, 0.02)
    telemetry.query_answered("/api/logs/{log_id}/context", 200, 0.01)
    telemetry.query_answered("/api/logs/query", 400, 0.01)  # refused: not a query time
    telemetry.query_answered("/api/ingest/metrics", 202, 0.01)
    telemetry.query_answered("/some/{raw}/path", 200, 0.01)
    counts = {
        s.labels["kind"]: s.value for m in telemetry.registry.collect()
        if m.name == "opspilot_query_duration_seconds" for s in m.samples
        if s.name.endswith("_count")
    }
    assert counts == {"metrics_query": 1.0, "logs_context": 1.0}


def test_every_query_route_has_a_kind() -> None:
    from aiohttp import web

    from opspilot.entrypoints.api import routes_logs, routes_metrics

    app = web.Application()
    routes_metrics.register(app)
    routes_logs.register(app)
    templates = {r.canonical for r in app.router.resources()}
    assert templates == set(QUERY_KINDS)
    assert len(set(QUERY_KINDS.values())) == len(QUERY_KINDS)


async def test_the_api_observes_query_latency(
    api: Any, container: Container, tenant: Tenant
) -> None:
    point = {"name": "cpu", "value": 1.0, "service": "api", "timestamp": "2024-03-01T11:00:00Z"}
    assert (await api.post("/api/ingest/metrics", json={"metrics": [point]},
                           headers=tenant.ingest_headers)).status == 202
    await drain(container)
    query = ("/api/metrics/query?metric_name=cpu&service_name=api&time_bucket=1h"
             "&start_time=2024-03-01T10:00:00Z&end_time=2024-03-01T12:00:00Z")
    assert (await api.get(query, headers=tenant.query_headers)).status == 200
    assert (await api.get("/api/logs/query", headers=tenant.query_headers)).status == 200
    registry = container.api_telemetry().registry
    assert sample(registry, "opspilot_query_duration_seconds_count", kind="metrics_query") == 1
    assert sample(registry, "opspilot_query_duration_seconds_count", kind="logs_search") == 1


# -- registries served together --------------------------------------------------------------


def test_included_registries_are_served_once_each() -> None:
    api, worker = ApiTelemetry(), WorkerTelemetry()
    worker.written.labels("metrics.ingest").inc(5)
    include_registries(api.registry, [worker.registry, api.registry])
    text = generate_latest(api.registry).decode()
    assert 'opspilot_worker_records_written_total{stream="metrics.ingest"} 5.0' in text
    assert text.count("# TYPE opspilot_http_requests_total counter") == 1
    assert text.count("# TYPE opspilot_worker_records_written_total counter") == 1


# -- the asyncpg pool --------------------------------------------------------------------------


class FakePool:
    def __init__(self, size: int = 4, idle: int = 1, max_size: int = 10,
                 rows: dict[str, list[dict[str, Any]]] | None = None,
                 fail: Exception | None = None) -> None:
        self.size, self.idle, self.max_size = size, idle, max_size
        self.rows = rows or {}
        self.fail = fail
        self.args: list[tuple[Any, ...]] = []

    def get_size(self) -> int:
        return self.size

    def get_idle_size(self) -> int:
        return self.idle

    def get_max_size(self) -> int:
        return self.max_size

    @asynccontextmanager
    async def acquire(self) -> Any:
        if self.fail is not None:
            raise self.fail
        yield self

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        self.args.append(args)
        return self.rows["tables" if "pg_partition_root" in sql else "activity"]


def test_pool_collector_reports_connections_by_state() -> None:
    registry = CollectorRegistry()
    pool = FakePool(size=4, idle=1, max_size=10)
    registry.register(PoolCollector(pool))
    values = {state: sample(registry, "opspilot_db_pool_connections", state=state)
              for state in ("open", "idle", "in_use", "max")}
    assert values == {"open": 4, "idle": 1, "in_use": 3, "max": 10}
    pool.idle = 4  # read at scrape time
    assert sample(registry, "opspilot_db_pool_connections", state="in_use") == 0


def test_pool_collector_without_a_pool_has_no_samples() -> None:
    registry = CollectorRegistry()
    registry.register(PoolCollector(lambda: None))
    text = generate_latest(registry).decode()
    assert "# TYPE opspilot_db_pool_connections gauge" in text
    assert "opspilot_db_pool_connections{" not in text


# -- PostgreSQL --------------------------------------------------------------------------------

PG_ROWS = {
    "tables": [
        {"table_name": "metrics", "table_bytes": 8192.0, "index_bytes": 4096.0,
         "rows_inserted": 120.0, "live_rows": 100.0},
        {"table_name": "projects", "table_bytes": 1024.0, "index_bytes": 512.0,
         "rows_inserted": 2.0, "live_rows": 2.0},
    ],
    "activity": [
        {"state": "active", "connections": 3.0, "slow": 2.0},
        {"state": "idle", "connections": 5.0, "slow": 0.0},
        {"state": "something new", "connections": 1.0, "slow": 0.0},
    ],
}


async def test_postgres_exporter_serves_its_last_snapshot() -> None:
    registry = CollectorRegistry()
    pool = FakePool(rows=PG_ROWS)
    exporter = PostgresExporter(pool, slow_seconds=1.0)
    registry.register(exporter)
    assert sample(registry, "opspilot_pg_table_bytes", table="metrics") is None  # not yet
    await exporter.refresh()
    assert sample(registry, "opspilot_pg_table_bytes", table="metrics") == 8192
    assert sample(registry, "opspilot_pg_index_bytes", table="metrics") == 4096
    assert sample(registry, "opspilot_pg_rows_inserted_total", table="metrics") == 120
    assert sample(registry, "opspilot_pg_live_rows", table="projects") == 2
    assert sample(registry, "opspilot_pg_slow_queries") == 2
    assert sample(registry, "opspilot_pg_connections", state="idle") == 5
    assert sample(registry, "opspilot_pg_connections", state="unknown") == 1  # bounded states
    assert pool.args[-1] == (1.0,)  # the slow threshold is a bound parameter


async def test_a_failed_postgres_refresh_drops_the_snapshot_and_is_counted() -> None:
    registry = CollectorRegistry()
    pool = FakePool(rows=PG_ROWS)
    exporter = PostgresExporter(pool)
    registry.register(exporter)
    health = ExporterHealth(registry)
    assert await refresh_once(health, exporter, 1.0)
    assert sample(registry, "opspilot_exporter_up", exporter="postgres") == 1
    pool.fail = OSError("connection refused")
    assert not await refresh_once(health, exporter, 1.0)
    assert sample(registry, "opspilot_exporter_up", exporter="postgres") == 0
    assert sample(registry, "opspilot_exporter_errors_total", exporter="postgres") == 1
    assert sample(registry, "opspilot_pg_table_bytes", table="metrics") is None


async def test_a_slow_refresh_times_out() -> None:
    class Stuck:
        name = "stuck"

        async def refresh(self) -> None:
            await asyncio.sleep(10)

    registry = CollectorRegistry()
    health = ExporterHealth(registry)
    assert not await refresh_once(health, Stuck(), 0.05)
    assert sample(registry, "opspilot_exporter_errors_total", exporter="stuck") == 1


# -- OpenSearch --------------------------------------------------------------------------------

OS_STATS = {
    "_all": {
        "primaries": {"docs": {"count": 1500}},
        "total": {"store": {"size_in_bytes": 2_000_000},
                  "search": {"query_total": 40, "query_time_in_millis": 2500,
                             "fetch_total": 30, "fetch_time_in_millis": 600}},
    },
    "indices": {"opspilot-logs-2024.03.01": {}, "opspilot-logs-2024.03.02": {}},
}


class FakeIndices:
    def __init__(self, answer: dict[str, Any] | Exception) -> None:
        self.answer = answer
        self.calls: list[dict[str, Any]] = []

    async def stats(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class FakeOpenSearch:
    def __init__(self, answer: dict[str, Any] | Exception) -> None:
        self.indices = FakeIndices(answer)


async def test_opensearch_exporter_reads_index_stats() -> None:
    registry = CollectorRegistry()
    client = FakeOpenSearch(OS_STATS)
    exporter = OpenSearchExporter(client, "opspilot-logs-*")
    registry.register(exporter)
    await exporter.refresh()
    labels = {"index_pattern": "opspilot-logs-*"}
    assert sample(registry, "opspilot_opensearch_docs", **labels) == 1500
    assert sample(registry, "opspilot_opensearch_store_bytes", **labels) == 2_000_000
    assert sample(registry, "opspilot_opensearch_indices", **labels) == 2
    assert sample(registry, "opspilot_opensearch_search_queries_total", **labels) == 40
    assert sample(registry, "opspilot_opensearch_search_query_seconds_total", **labels) == 2.5
    assert sample(registry, "opspilot_opensearch_search_fetch_seconds_total", **labels) == 0.6
    assert client.indices.calls[0]["index"] == "opspilot-logs-*"


async def test_opensearch_exporter_with_no_index_yet_reports_zeros() -> None:
    assert OpenSearchExporter.parse({"_shards": {"total": 0}, "_all": {}, "indices": {}}) == {
        "indices": 0.0, "docs": 0.0, "store_bytes": 0.0, "queries": 0.0,
        "query_seconds": 0.0, "fetches": 0.0, "fetch_seconds": 0.0,
    }


async def test_a_failed_opensearch_refresh_drops_the_snapshot() -> None:
    registry = CollectorRegistry()
    client = FakeOpenSearch(OS_STATS)
    exporter = OpenSearchExporter(client, "opspilot-logs-*")
    registry.register(exporter)
    await exporter.refresh()
    client.indices.answer = ConnectionError("down")
    with pytest.raises(ConnectionError):
        await exporter.refresh()
    assert sample(registry, "opspilot_opensearch_docs", index_pattern="opspilot-logs-*") is None


# -- the queue depth sampler -----------------------------------------------------------------


async def test_queue_depth_covers_each_stream_and_its_dead_letters() -> None:
    queue = InMemoryQueue()
    await queue.publish_raw(Stream.METRICS, b"{}")
    await queue.publish_raw(Stream.METRICS, b"{}")
    await queue.publish_raw(Stream.LOGS, b"not a batch")
    deliveries = queue.deliveries([Stream.LOGS])
    delivery = await anext(deliveries)
    await delivery.dead_letter("undecodable")
    telemetry = WorkerTelemetry()
    await QueueDepthSampler(queue, telemetry.queue_depth).refresh()
    depths = {q: sample(telemetry.registry, "opspilot_queue_depth", queue=q)
              for q in ("metrics.ingest", "metrics.ingest.dlq", "logs.ingest", "logs.ingest.dlq")}
    assert depths == {"metrics.ingest": 2, "metrics.ingest.dlq": 0, "logs.ingest": 0,
                      "logs.ingest.dlq": 1}


async def test_a_failed_depth_look_up_removes_only_its_series() -> None:
    class HalfBroken:
        async def depth(self, stream: Stream) -> int:
            if stream is Stream.LOGS:
                raise ConnectionError("channel closed")
            return 7

        async def dead_letter_depth(self, stream: Stream) -> int:
            return 0

    gauge = Gauge("depth", "d", ["queue"], registry=CollectorRegistry())
    gauge.labels("logs.ingest").set(3)  # a value from an earlier sample
    with pytest.raises(ConnectionError):
        await QueueDepthSampler(HalfBroken(), gauge).refresh()
    queues = {s.labels["queue"]: s.value for m in gauge.collect() for s in m.samples}
    assert queues == {"metrics.ingest": 7, "metrics.ingest.dlq": 0, "logs.ingest.dlq": 0}


# -- what an autoscaler reads besides the depth: message age, utilisation ------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_message_age_follows_deliveries_grows_while_stuck_and_is_zero_when_empty() -> None:
    telemetry = WorkerTelemetry()
    clock = Clock()
    telemetry._monotonic = clock
    telemetry.delivered("metrics.ingest", 4.0)
    assert sample(telemetry.registry, "opspilot_queue_message_age_seconds",
                  queue="metrics.ingest") == 4.0
    clock.now += 10  # nothing taken since, 50 messages still waiting: the head is older
    telemetry.queue_sampled("metrics.ingest", 50)
    assert sample(telemetry.registry, "opspilot_queue_message_age_seconds",
                  queue="metrics.ingest") == 14.0
    telemetry.queue_sampled("metrics.ingest.dlq", 0)  # a DLQ has no age series
    assert sample(telemetry.registry, "opspilot_queue_message_age_seconds",
                  queue="metrics.ingest.dlq") is None
    telemetry.queue_sampled("metrics.ingest", 0)
    assert sample(telemetry.registry, "opspilot_queue_message_age_seconds",
                  queue="metrics.ingest") == 0.0


async def test_utilisation_is_the_busy_share_of_each_interval() -> None:
    telemetry = WorkerTelemetry()
    clock = Clock()
    telemetry._monotonic = clock
    telemetry.sample_utilisation()  # the first sample only starts the interval
    assert sample(telemetry.registry, "opspilot_worker_utilisation") == 0.0
    telemetry.batch_written("metrics.ingest", 1000, 1.5)
    telemetry.batch_written("logs.ingest", 500, 0.5)
    clock.now += 5
    telemetry.sample_utilisation()
    assert sample(telemetry.registry, "opspilot_worker_utilisation") == pytest.approx(0.4)
    assert sample(telemetry.registry, "opspilot_worker_busy_seconds_total",
                  stream="metrics.ingest") == 1.5
    clock.now += 5
    telemetry.sample_utilisation()
    assert sample(telemetry.registry, "opspilot_worker_utilisation") == 0.0


async def test_the_depth_sampler_hands_each_depth_to_the_telemetry() -> None:
    queue = InMemoryQueue()
    await queue.publish_raw(Stream.METRICS, b"{}")
    telemetry = WorkerTelemetry()
    telemetry.delivered("metrics.ingest", 2.0)
    telemetry.delivered("logs.ingest", 3.0)
    await QueueDepthSampler(queue, telemetry.queue_depth,
                            on_depth=telemetry.queue_sampled).refresh()
    assert sample(telemetry.registry, "opspilot_queue_message_age_seconds",
                  queue="logs.ingest") == 0.0  # empty
    assert sample(telemetry.registry, "opspilot_queue_message_age_seconds",
                  queue="metrics.ingest") >= 2.0  # type: ignore[operator]


# -- the sampling task -------------------------------------------------------------------------


async def test_self_monitoring_samples_the_queue_and_stops(container: Container) -> None:
    telemetry = container.worker_telemetry()
    await container.memory_queue().publish_raw(Stream.METRICS, b"{}")
    monitoring = start_self_monitoring(container, telemetry.registry, worker=True,
                                       queue_seconds=0.01, store_seconds=0.01)
    assert monitoring.task is not None
    for _ in range(200):
        if sample(telemetry.registry, "opspilot_queue_depth", queue="metrics.ingest") == 1:
            break
        await asyncio.sleep(0.01)
    assert sample(telemetry.registry, "opspilot_queue_depth", queue="metrics.ingest") == 1
    assert sample(telemetry.registry, "opspilot_exporter_up", exporter="queue") == 1
    await monitoring.stop()
    assert monitoring.task is None
    await monitoring.stop()  # idempotent


async def test_api_only_monitoring_starts_no_task(container: Container) -> None:
    monitoring = start_self_monitoring(container, container.api_telemetry().registry,
                                       worker=False)
    assert monitoring.task is None
    await monitoring.stop()
