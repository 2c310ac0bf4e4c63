"""Issue #15 items 1 and 2 on the real services (PostgreSQL, OpenSearch, RabbitMQ):

- a message holding records PostgreSQL refuses (bypassing the API, as an older API or
  another publisher could) has only those records dead-lettered, at once, and the rest of
  its records written to both stores;
- the property of tests/stored_whole.py: whatever the API accepts is stored whole.

Each run has its own schema, index prefix and queue prefix, removed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from opspilot.adapters.opensearch import mapping
from opspilot.adapters.postgres.database import asyncpg_dsn
from opspilot.adapters.postgres.migrate import migrate
from opspilot.adapters.queue_wire_format import decode_batch
from opspilot.adapters.rabbitmq.dead_letters import RabbitMQDeadLetters
from opspilot.container import Container, build_container, start_container, stop_container
from opspilot.domain.ingest import LogBatch, MetricBatch, Stream
from opspilot.domain.logs import LogLevel, LogRecord, log_id_for
from opspilot.domain.metrics import Aggregation, MetricPoint, SeriesSelector
from opspilot.domain.ports import WindowRequest
from opspilot.domain.timewindow import TimeRange
from opspilot.settings import Settings
from tests.contract.conftest import database_url_or_skip
from tests.contract.log_fixtures import opensearch_url_or_skip
from tests.contract.queue_fixtures import amqp_url_or_skip, delete_queues
from tests.stored_whole import (
    Pipeline,
    test_accepted_logs_are_stored_whole,
    test_accepted_metrics_are_stored_whole,
)

pytestmark = pytest.mark.integration


async def _real_settings() -> tuple[Settings, Any]:
    """Settings on a fresh schema / index prefix / queue prefix, and their cleanup."""
    db_url = await database_url_or_skip()
    os_url = await opensearch_url_or_skip()
    amqp_url = await amqp_url_or_skip()
    tag = uuid.uuid4().hex[:10]
    schema, prefix = f"t_hard_{tag}", f"t-hard-{tag}-"
    await migrate(db_url, schema)
    settings = Settings(
        _env_file=None, database_url=db_url, database_schema=schema, opensearch_url=os_url,
        index_prefix=prefix, amqp_url=amqp_url, queue_prefix=f"t-hard-{tag}.", redis_url=None,
        ai_url=None, rate_limits_enabled=False,
    )

    async def cleanup() -> None:
        await delete_queues(amqp_url, settings.queue_prefix)
        conn = await asyncpg.connect(asyncpg_dsn(db_url))
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
        from opspilot.adapters.opensearch.store import connect_opensearch

        client = await connect_opensearch(os_url)
        try:
            with contextlib.suppress(Exception):
                names = await client.indices.get(index=f"{prefix}*", expand_wildcards="all")
                if names:
                    await client.indices.delete(index=",".join(names))
            with contextlib.suppress(Exception):
                await client.indices.delete_index_template(name=mapping.alias_name(prefix))
        finally:
            await client.close()

    return settings, cleanup


@pytest.fixture
async def real() -> AsyncIterator[tuple[Container, Settings]]:
    settings, cleanup = await _real_settings()
    container = build_container(settings)
    await start_container(container)
    try:
        yield container, settings
    finally:
        await stop_container(container)
        await cleanup()


async def test_only_the_refused_records_are_dead_lettered_at_once(
    real: tuple[Container, Settings],
) -> None:
    container, settings = real
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    points = [MetricPoint("p", now + timedelta(seconds=i), "m", float(i),
                          "svc\x00" if i == 7 else "svc") for i in range(20)]
    records = [LogRecord(log_id_for("logs-1", i), "p", now + timedelta(seconds=i), LogLevel.INFO,
                         f"line {i}", "a\x00" if i == 3 else "a") for i in range(10)]
    queue = container.queue()
    await queue.publish(MetricBatch("metrics-1", "p", now, points))
    await queue.publish(LogBatch("logs-1", "p", now, records))
    dead = RabbitMQDeadLetters(str(settings.amqp_url), prefix=settings.queue_prefix)
    worker = container.ingest_worker()  # its own RabbitMQ consumer
    started = time.monotonic()
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(600):
            if (await queue.dead_letter_depth(Stream.METRICS) == 1
                    and await queue.dead_letter_depth(Stream.LOGS) == 1
                    and not await queue.depth(Stream.METRICS)
                    and not await queue.depth(Stream.LOGS)):
                break
            await asyncio.sleep(0.1)
        # at once: no backoff was spent (three permanent attempts took ~0.5 s a message)
        assert time.monotonic() - started < 5
    finally:
        worker.request_stop()
        await task

    window = TimeRange(now - timedelta(hours=1), now + timedelta(hours=1))
    request = WindowRequest("p", SeriesSelector("m"), Aggregation.COUNT, window)
    assert (await container.metric_store().aggregate_windows([request]))[0].count == 19
    assert await container.log_metadata().count("p", window) == 9
    for i in range(10):
        found = await _eventually_get(container, log_id_for("logs-1", i), expect=i != 3)
        assert (found is None) == (i == 3), i
    letters = {d.stream: d for d in await dead.list()}
    assert set(letters) == {"metrics.ingest", "logs.ingest"}
    metric_part = decode_batch(letters["metrics.ingest"].body)
    assert [p.value for p in metric_part.points] == [7.0]  # type: ignore[union-attr]
    log_part = decode_batch(letters["logs.ingest"].body)
    assert [r.id for r in log_part.records] == [log_id_for("logs-1", 3)]  # type: ignore[union-attr]
    assert "RecordsRejected" in letters["logs.ingest"].reason
    await dead.close()


async def _eventually_get(container: Container, log_id: str, expect: bool) -> Any:
    deadline = time.monotonic() + (10 if expect else 1.5)
    while True:
        found = await container.log_store().get("p", log_id)
        if found is not None or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.1)


# -- the property on the real stores ----------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Pipeline]:
    setup = asyncio.new_event_loop()
    try:
        settings, cleanup = setup.run_until_complete(_real_settings())
    finally:
        setup.close()
    running = Pipeline(settings, lambda c: c.queue(),
                       datetime.now(UTC), cleanup)
    running.start()
    yield running
    running.stop()



__all__ = ["test_accepted_logs_are_stored_whole", "test_accepted_metrics_are_stored_whole"]
