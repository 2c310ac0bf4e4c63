"""The alert process over the real edges: ticks owned in PostgreSQL, chunks carried by
RabbitMQ (stores in memory, so only the scheduling edges are under test here).

Needs OPSPILOT_DATABASE_URL and OPSPILOT_AMQP_URL; skips without them unless CI or
OPSPILOT_REQUIRE_SERVICES=1."""

from __future__ import annotations

import asyncio
import importlib.util
import uuid
from datetime import UTC, datetime, timedelta

from dependency_injector import providers

from opspilot.adapters.clock_and_ids import FixedClock
from opspilot.adapters.postgres.migrate import migrate
from opspilot.application.alerting import RuleSpec
from opspilot.container import Container, build_container, start_container, stop_container
from opspilot.domain.ingest import MetricBatch
from opspilot.domain.metrics import MetricPoint
from opspilot.entrypoints.alert_scheduler import run_alert_process
from opspilot.settings import Settings
from tests.contract.queue_fixtures import amqp_url_or_skip, delete_queues, unique_prefix
from tests.contract.test_alert_scheduling import database_url_or_skip

NOW = datetime(2024, 3, 1, 12, 0, 30, tzinfo=UTC)


async def _replica(settings: Settings, shared: Container) -> Container:
    """One scheduler replica: its own container, tick lock (PostgreSQL) and evaluation queue
    (RabbitMQ) as the settings open them, over the stores of `shared`."""
    replica = build_container(settings)
    for name in ("clock", "analyzer", "metric_store", "rules", "channels", "incidents"):
        getattr(replica, name).override(providers.Object(getattr(shared, name)()))
    return await start_container(replica, alerting=True)


async def test_replicas_share_ticks_through_postgres_and_rabbitmq() -> None:
    database_url = await database_url_or_skip()
    amqp_url = await amqp_url_or_skip()
    prefix, schema = unique_prefix(), f"t_{uuid.uuid4().hex[:12]}"
    container = build_container(Settings(_env_file=None, rate_limits_enabled=False,
                                         database_url=None, amqp_url=None, ai_url=None,
                                         opensearch_url=None, redis_url=None))
    container.clock.override(providers.Object(FixedClock(NOW)))
    if importlib.util.find_spec("opspilot.adapters.ai.in_process") is None:
        container.analyzer.override(providers.Object(None))
    await start_container(container)
    rules = container.alert_rules()
    for n in range(1200):  # three chunks of 500
        await rules.create_rule("p1", RuleSpec(name=f"r{n}", metric_name="cpu",
                                               threshold=float(n)))
    points = [MetricPoint("p1", NOW - timedelta(minutes=m), "cpu", 600.0) for m in range(1, 4)]
    await container.metric_store().write_batches([MetricBatch("b", "p1", NOW, points)])
    edges = Settings(_env_file=None, database_url=database_url, database_schema=schema,
                     amqp_url=amqp_url, queue_prefix=prefix, opensearch_url=None,
                     redis_url=None, ai_url=None)
    await migrate(database_url, schema)
    replicas: list[Container] = []
    try:
        replicas = [await _replica(edges, container) for _ in range(3)]
        assert {type(r.scheduler_lock()).__name__ for r in replicas} == {"PostgresSchedulerLock"}
        assert {type(r.evaluation_queue()).__name__ for r in replicas} == {
            "RabbitMQEvaluationQueue"}
        codes = await asyncio.gather(*(
            run_alert_process(replica, once=True) for replica in replicas))
        assert codes == [0, 0, 0]
        incidents = await container.incidents().list_incidents("p1", limit=1000)
        assert len(incidents) == 600  # thresholds 0..599 are below 600, each fired once
        states = await container.rules().get_states([r.id for r in
                                                     await container.rules().list_rules("p1")])
        assert len(states) == 1200  # every rule evaluated (exactly once: one incident each)
    finally:
        for replica in [*replicas, container]:
            await stop_container(replica)
        await delete_queues(amqp_url, prefix)
        import asyncpg

        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
