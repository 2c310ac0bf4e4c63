"""The ingestion worker on a real RabbitMQ, writing into the in-memory stores.

Skips without OPSPILOT_AMQP_URL (fails in CI / with OPSPILOT_REQUIRE_SERVICES=1). Each test
uses its own queue-name prefix and deletes its queues afterwards.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

import attrs
import pytest

from opspilot.adapters.memory.logs import InMemoryLogMetadataStore, InMemoryLogStore
from opspilot.adapters.memory.metrics import InMemoryMetricStore
from opspilot.adapters.rabbitmq._amqp import open_connection
from opspilot.adapters.rabbitmq.consumer import RabbitMQConsumer
from opspilot.adapters.rabbitmq.dead_letters import RabbitMQDeadLetters
from opspilot.adapters.rabbitmq.queue import RabbitMQQueue
from opspilot.adapters.rabbitmq.topology import (
    CLASSIC,
    EXISTING,
    QUORUM,
    declare_topology,
    main_arguments,
    queue_name,
)
from opspilot.application.worker import IngestWorker, WorkerSettings
from opspilot.domain.errors import ServiceUnavailable, TransientStoreError
from opspilot.domain.ingest import LogBatch, MetricBatch, Stream
from opspilot.domain.logs import LogLevel, LogRecord, log_id_for
from opspilot.domain.metrics import MetricPoint
from tests.contract.queue_fixtures import amqp_url_or_skip, delete_queues, unique_prefix

pytestmark = pytest.mark.integration

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
PROJECT = "proj-rmq"
FAST = WorkerSettings(max_records=50, flush_interval=0.05, backoff_base=0.01, backoff_cap=0.05)


def metric_batch(n: int, points: int = 5) -> MetricBatch:
    return MetricBatch(
        f"m-{n:04d}", PROJECT, T0,
        [MetricPoint(PROJECT, T0 + timedelta(seconds=n * 100 + i), "cpu", float(i), "api")
         for i in range(points)],
    )


def log_batch(n: int, records: int = 3) -> LogBatch:
    message_id = f"l-{n:04d}"
    return LogBatch(
        message_id, PROJECT, T0,
        [LogRecord(log_id_for(message_id, i), PROJECT, T0 + timedelta(seconds=i),
                   LogLevel.INFO, f"line {i}", "api")
         for i in range(records)],
    )


class RecordingMetricStore(InMemoryMetricStore):
    """The in-memory store, counting committed writes per message id, with injectable
    failures: `fail_first` transient errors, and a ValueError for any `poison` id."""

    def __init__(self, fail_first: int = 0, poison: frozenset[str] = frozenset(),
                 delay: float = 0.0) -> None:
        super().__init__()
        self.commits: Counter[str] = Counter()
        self.calls = 0
        self._fail_first = fail_first
        self._poison = poison
        self._delay = delay

    async def write_batches(self, batches: Sequence[MetricBatch]) -> int:
        self.calls += 1
        if self.calls <= self._fail_first:
            raise TransientStoreError("database restarting")
        if any(b.message_id in self._poison for b in batches):
            raise ValueError("value out of range for column")
        if self._delay:
            await asyncio.sleep(self._delay)
        self.commits.update(b.message_id for b in batches)
        return await super().write_batches(batches)


class RecordingLogStore(InMemoryLogStore):
    def __init__(self) -> None:
        super().__init__()
        self.commits: Counter[str] = Counter()

    async def write_batches(self, batches: Sequence[LogBatch]) -> int:
        self.commits.update(b.message_id for b in batches)
        return await super().write_batches(batches)


@attrs.define
class Broker:
    url: str
    prefix: str
    publisher: RabbitMQQueue
    dead_letters: RabbitMQDeadLetters
    consumers: list[RabbitMQConsumer] = attrs.field(factory=list)

    def consumer(self, prefetch: int = 64) -> RabbitMQConsumer:
        made = RabbitMQConsumer(self.url, prefix=self.prefix, prefetch=prefetch)
        self.consumers.append(made)
        return made


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    url = await amqp_url_or_skip()
    prefix = unique_prefix()
    publisher = RabbitMQQueue(url, prefix=prefix)
    await publisher.connect()
    dead = RabbitMQDeadLetters(url, prefix=prefix)
    await dead.connect()
    made = Broker(url, prefix, publisher, dead)
    yield made
    for consumer in made.consumers:
        await consumer.stop()
    await publisher.close()
    await dead.close()
    await delete_queues(url, prefix)


@attrs.define
class RunningWorker:
    worker: IngestWorker
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.worker.request_stop()
        async with asyncio.timeout(15):
            await self.task


def start_worker(consumer: RabbitMQConsumer, metrics: InMemoryMetricStore,
                 logs: InMemoryLogStore | None = None) -> RunningWorker:
    worker = IngestWorker(consumer, metrics, logs or RecordingLogStore(),
                          InMemoryLogMetadataStore(), FAST)
    return RunningWorker(worker, asyncio.create_task(worker.run()))


async def until(condition: Callable[[], bool | Awaitable[bool]], within: float = 20.0) -> None:
    async with asyncio.timeout(within):
        while True:
            result = condition()
            if result if isinstance(result, bool) else await result:
                return
            await asyncio.sleep(0.05)


async def queues_empty(broker: Broker) -> bool:
    depths = [await broker.publisher.depth(s) for s in (Stream.METRICS, Stream.LOGS)]
    return depths == [0, 0]


async def test_the_worker_stores_and_acks_every_published_batch(broker: Broker) -> None:
    metrics, logs = RecordingMetricStore(), RecordingLogStore()
    for n in range(10):
        await broker.publisher.publish(metric_batch(n))
        await broker.publisher.publish(log_batch(n))
    running = start_worker(broker.consumer(), metrics, logs)

    await until(lambda: len(metrics.commits) == 10 and len(logs.commits) == 10)
    await running.stop()

    assert metrics.count(PROJECT) == 50
    assert await logs.get(PROJECT, log_id_for("l-0009", 2)) is not None
    assert await queues_empty(broker)  # stopped: anything unacked would be back in the queue
    assert await broker.dead_letters.list() == []


async def test_transient_store_failures_are_retried_without_dead_letters(broker: Broker) -> None:
    metrics = RecordingMetricStore(fail_first=4)
    for n in range(20):
        await broker.publisher.publish(metric_batch(n))
    running = start_worker(broker.consumer(), metrics)

    await until(lambda: len(metrics.commits) == 20)
    await running.stop()

    assert metrics.calls > 4
    assert set(metrics.commits.values()) == {1}
    assert metrics.count(PROJECT) == 100
    assert await broker.dead_letters.list() == []
    assert await queues_empty(broker)


async def test_a_batch_the_store_refuses_is_dead_lettered_alone(broker: Broker) -> None:
    metrics = RecordingMetricStore(poison=frozenset({"m-0007"}))
    for n in range(12):
        await broker.publisher.publish(metric_batch(n))
    running = start_worker(broker.consumer(), metrics)

    await until(lambda: len(metrics.commits) == 11)
    letters: list = []

    async def one_dead_letter() -> bool:
        letters[:] = await broker.dead_letters.list()
        return len(letters) == 1

    await until(one_dead_letter)
    await running.stop()

    (letter,) = letters
    assert letter.id == "m-0007"
    assert letter.stream == "metrics.ingest"
    assert letter.reason.startswith("ValueError: value out of range")
    assert "m-0007" not in metrics.commits
    assert metrics.count(PROJECT) == 55
    assert await queues_empty(broker)


async def test_stop_flushes_what_it_holds_and_the_rest_goes_to_the_next_worker(
    broker: Broker,
) -> None:
    metrics = RecordingMetricStore(delay=0.1)
    published = 40
    for n in range(published):
        await broker.publisher.publish(metric_batch(n, points=10))
    first = start_worker(broker.consumer(prefetch=8), metrics)
    await until(lambda: len(metrics.commits) >= 5)

    await first.stop()  # what SIGTERM does in `opspilot worker`
    after_first = sum(metrics.commits.values())
    assert 5 <= after_first < published
    second = start_worker(broker.consumer(prefetch=8), metrics)
    await until(lambda: len(metrics.commits) == published)
    await second.stop()

    assert set(metrics.commits.values()) == {1}  # nothing acked was delivered again
    assert metrics.count(PROJECT) == published * 10
    assert await queues_empty(broker)


async def test_the_publisher_reconnects_after_losing_its_connection(broker: Broker) -> None:
    await broker.publisher.publish(metric_batch(1))
    connection = broker.publisher._connection
    assert connection is not None
    await connection.close()  # as a broker restart would

    await broker.publisher.publish(metric_batch(2))

    assert await broker.publisher.depth(Stream.METRICS) == 2


async def test_the_consumer_reconnects_after_losing_its_connection(broker: Broker) -> None:
    metrics = RecordingMetricStore()
    consumer = broker.consumer()
    running = start_worker(consumer, metrics)
    await broker.publisher.publish(metric_batch(1))
    await until(lambda: len(metrics.commits) == 1)
    session = consumer._session
    assert session is not None
    await session.connection.close()

    await broker.publisher.publish(metric_batch(2))
    await until(lambda: len(metrics.commits) == 2)
    await running.stop()

    assert await queues_empty(broker)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_publishing_to_an_unreachable_broker_fails_fast() -> None:
    queue = RabbitMQQueue(f"amqp://guest:guest@127.0.0.1:{closed_port()}/", reconnect_interval=0)
    started = time.monotonic()

    with pytest.raises(ServiceUnavailable) as on_connect:
        await queue.connect()
    with pytest.raises(ServiceUnavailable) as on_publish:
        await queue.publish(metric_batch(1))

    assert time.monotonic() - started < 6
    assert on_connect.value.retry_after > 0 and on_publish.value.retry_after > 0
    await queue.close()
    with pytest.raises(ServiceUnavailable):
        await queue.publish(metric_batch(1))


async def test_a_consumer_waits_for_an_unreachable_broker_until_stopped() -> None:
    consumer = RabbitMQConsumer(f"amqp://guest:guest@127.0.0.1:{closed_port()}/",
                                reconnect_delay=0.05)
    received = []

    async def consume() -> None:
        async for delivery in consumer.deliveries([Stream.METRICS]):
            received.append(delivery)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.5)
    assert not task.done()  # retrying, not crashed

    await consumer.stop()

    async with asyncio.timeout(5):
        await task
    assert received == []


async def test_a_deleted_queue_is_declared_again_by_the_next_publish(broker: Broker) -> None:
    await broker.publisher.publish(metric_batch(1))
    await delete_queues(broker.url, broker.prefix)

    with pytest.raises(ServiceUnavailable):
        await broker.publisher.publish(metric_batch(2))
    await broker.publisher.publish(metric_batch(3))

    assert await broker.publisher.depth(Stream.METRICS) == 1


async def test_topology_falls_back_to_what_the_broker_accepts(broker: Broker) -> None:
    prefix = unique_prefix()
    connection = await open_connection(broker.url, 3)
    try:
        channel = await connection.channel()
        await channel.declare_queue(queue_name(prefix, Stream.METRICS), durable=True,
                                    arguments=main_arguments(prefix, Stream.METRICS, CLASSIC))
        await channel.declare_queue(queue_name(prefix, Stream.LOGS), durable=True)
        await channel.close()

        kinds = await declare_topology(connection, prefix)

        assert kinds == {Stream.METRICS: CLASSIC, Stream.LOGS: EXISTING, Stream.ALERTS: QUORUM}
        assert await declare_topology(connection, prefix) == kinds  # idempotent
    finally:
        await connection.close()
        await delete_queues(broker.url, prefix)


async def test_messages_the_broker_dead_letters_itself_reach_the_dlq(broker: Broker) -> None:
    await broker.publisher.publish(metric_batch(1))
    connection = await open_connection(broker.url, 3)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name(broker.prefix, Stream.METRICS), ensure=False)
        message = await queue.get(no_ack=False, timeout=5)
        assert message is not None
        await message.reject(requeue=False)  # what a quorum delivery limit also does
        await channel.close()
    finally:
        await connection.close()

    letters: list = []

    async def listed() -> bool:
        letters[:] = await broker.dead_letters.list()
        return bool(letters)

    await until(listed, within=10)
    (letter,) = letters
    assert (letter.id, letter.stream, letter.reason) == ("m-0001", "metrics.ingest",
                                                         "broker: rejected")
    assert await broker.dead_letters.replay() == 1
    assert await broker.publisher.depth(Stream.METRICS) == 1


async def test_a_broken_channel_is_replaced_on_the_same_connection(broker: Broker) -> None:
    await broker.publisher.publish(metric_batch(1))
    connection = broker.publisher._connection
    inspecting = broker.publisher._inspecting
    assert inspecting is not None
    await inspecting.close()  # as aiormq does after a timed-out look-up

    assert await broker.publisher.depth(Stream.METRICS) == 1
    await broker.publisher.publish(metric_batch(2))

    assert broker.publisher._connection is connection
    assert await broker.publisher.depth(Stream.METRICS) == 2
