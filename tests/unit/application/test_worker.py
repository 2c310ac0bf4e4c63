"""The ingestion worker on the in-memory queue: batching, ack after commit, retries, DLQ."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from opspilot.adapters.memory.logs import InMemoryLogMetadataStore, InMemoryLogStore
from opspilot.adapters.memory.metrics import InMemoryMetricStore
from opspilot.adapters.memory.queue import InMemoryQueue
from opspilot.application.worker import IngestWorker, WorkerSettings
from opspilot.domain.errors import TransientStoreError
from opspilot.domain.ingest import MetricBatch, Stream
from opspilot.domain.metrics import MetricPoint
from opspilot.domain.ports import WorkerObserver

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def batch(n: int, size: int = 10) -> MetricBatch:
    points = [MetricPoint("p", T0, "m", float(i)) for i in range(size)]
    return MetricBatch(f"batch-{n}", "p", T0, points)


class FlakyStore(InMemoryMetricStore):
    """Fails transiently `failures` times, and permanently for one batch id."""

    def __init__(self, failures: int = 0, poison: str | None = None) -> None:
        super().__init__()
        self.failures = failures
        self.poison = poison
        self.calls = 0

    async def write_batches(self, batches: Sequence[MetricBatch]) -> int:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise TransientStoreError("database is down")
        if any(b.message_id == self.poison for b in batches):
            raise ValueError("value out of range for column")
        return await super().write_batches(batches)


class Counting(WorkerObserver):
    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.retries = 0
        self.dead = 0

    def batch_written(self, stream: str, records: int, seconds: float) -> None:
        self.sizes.append(records)

    def retried(self, stream: str, reason: str) -> None:
        self.retries += 1

    def dead_lettered(self, stream: str, reason: str) -> None:
        self.dead += 1

    def delivered(self, stream: str, age_seconds: float) -> None:
        self.ages = [*getattr(self, "ages", []), (stream, age_seconds)]


async def run_until_empty(queue: InMemoryQueue, store: InMemoryMetricStore, **kw: Any) -> Counting:
    observer = Counting()
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await asyncio.sleep(0)

    worker = IngestWorker(queue, store, InMemoryLogStore(), InMemoryLogMetadataStore(),
                          WorkerSettings(**kw), observer, sleep=fake_sleep)
    task = asyncio.create_task(worker.run())
    for _ in range(400):
        if await queue.depth(Stream.METRICS) == 0:
            break
        await asyncio.sleep(0.005)
    worker.request_stop()
    await task
    observer.sleeps = sleeps  # type: ignore[attr-defined]
    return observer


async def test_batches_up_to_the_record_limit() -> None:
    queue = InMemoryQueue()
    for n in range(25):
        await queue.publish(batch(n, size=100))
    store = InMemoryMetricStore()
    observer = await run_until_empty(queue, store, max_records=1000, flush_interval=5.0)
    assert store.count("p") == 2500
    assert max(observer.sizes) <= 1000 and observer.sizes[0] == 1000


async def test_transient_failures_are_retried_with_growing_backoff() -> None:
    queue = InMemoryQueue()
    await queue.publish(batch(1))
    store = FlakyStore(failures=4)
    observer = await run_until_empty(queue, store, backoff_base=0.1, backoff_cap=1.0)
    assert store.count("p") == 10
    assert observer.retries == 4 and observer.dead == 0
    sleeps = observer.sleeps  # type: ignore[attr-defined]
    assert sleeps[-1] > sleeps[0] and max(sleeps) <= 1.0
    assert await queue.list() == []


async def test_a_poison_batch_is_isolated_and_dead_lettered() -> None:
    queue = InMemoryQueue()
    for n in range(5):
        await queue.publish(batch(n))
    store = FlakyStore(poison="batch-3")
    observer = await run_until_empty(queue, store, flush_interval=1.0)
    assert store.count("p") == 40
    dead = await queue.list()
    assert len(dead) == 1 and "value out of range" in dead[0].reason
    assert observer.dead == 1


async def test_undecodable_messages_are_dead_lettered() -> None:
    queue = InMemoryQueue()
    await queue.publish_raw(Stream.METRICS, b"\x00garbage")
    await queue.publish(batch(1))
    store = InMemoryMetricStore()
    await run_until_empty(queue, store)
    assert store.count("p") == 10
    (dead,) = await queue.list()
    assert dead.reason.startswith("undecodable")


async def test_redelivery_writes_nothing_twice() -> None:
    queue = InMemoryQueue()
    store = InMemoryMetricStore()
    await queue.publish(batch(7))
    await queue.publish(batch(7))  # the broker redelivered it after a crash
    await run_until_empty(queue, store)
    assert store.count("p") == 10


async def test_replayed_dead_letters_are_stored() -> None:
    queue = InMemoryQueue()
    await queue.publish(batch(3))
    await run_until_empty(queue, FlakyStore(poison="batch-3"))
    store = InMemoryMetricStore()
    assert await queue.replay() == 1
    await run_until_empty(queue, store)
    assert store.count("p") == 10


async def test_stop_returns_unacked_messages_to_the_queue() -> None:
    queue = InMemoryQueue(prefetch=1)
    await queue.publish(batch(1))
    await queue.publish(batch(2))
    deliveries = aiter(queue.deliveries([Stream.METRICS]))
    first = await anext(deliveries)
    assert first.batch is not None
    await queue.stop()
    assert await queue.depth(Stream.METRICS) == 2


async def test_each_delivery_reports_its_age_since_the_api_accepted_it() -> None:
    queue = InMemoryQueue()
    await queue.publish(batch(1))  # received_at T0
    observer = Counting()
    worker = IngestWorker(queue, InMemoryMetricStore(), InMemoryLogStore(),
                          InMemoryLogMetadataStore(), WorkerSettings(flush_interval=0.01),
                          observer, clock=lambda: T0 + timedelta(seconds=42))
    task = asyncio.create_task(worker.run())
    for _ in range(400):
        if getattr(observer, "ages", None):
            break
        await asyncio.sleep(0.005)
    worker.request_stop()
    await task
    assert observer.ages == [("metrics.ingest", 42.0)]  # type: ignore[attr-defined]
