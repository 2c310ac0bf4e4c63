"""Issue #15 item 1, worker side: records a store refuses as such are isolated by bisection,
dead-lettered alone and at once (no retry, no sleep); the rest of the message is written."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from opspilot.adapters.memory.logs import InMemoryLogMetadataStore, InMemoryLogStore
from opspilot.adapters.memory.metrics import InMemoryMetricStore
from opspilot.adapters.memory.queue import InMemoryQueue
from opspilot.adapters.queue_wire_format import decode_batch
from opspilot.application.worker import IngestWorker
from opspilot.domain.ingest import LogBatch, MetricBatch, Stream
from opspilot.domain.logs import LogLevel, LogRecord, log_id_for
from opspilot.domain.metrics import MetricPoint
from opspilot.domain.ports import WorkerObserver

T0 = datetime(2024, 1, 1, tzinfo=UTC)


class Seen(WorkerObserver):
    def __init__(self) -> None:
        self.retries = 0
        self.dead: list[str] = []

    def retried(self, stream: str, reason: str) -> None:
        self.retries += 1

    def dead_lettered(self, stream: str, reason: str) -> None:
        self.dead.append(reason)


def points(n: int, bad: set[int]) -> list[MetricPoint]:
    return [MetricPoint("p", T0, "m", float(i), "svc\x00" if i in bad else "svc")
            for i in range(n)]


def records(message_id: str, n: int, bad: set[int]) -> list[LogRecord]:
    return [LogRecord(log_id_for(message_id, i), "p", T0, LogLevel.INFO, f"line {i}",
                      "a\x00" if i in bad else "a") for i in range(n)]


async def run(queue: InMemoryQueue, metrics: Any, logs: Any, metadata: Any) -> tuple[Seen, list[float]]:
    seen, sleeps = Seen(), []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await asyncio.sleep(0)

    worker = IngestWorker(queue, metrics, logs, metadata, observer=seen, sleep=sleep)
    task = asyncio.create_task(worker.run())
    for _ in range(400):
        if not any([await queue.depth(s) for s in (Stream.METRICS, Stream.LOGS)]):
            break
        await asyncio.sleep(0.005)
    worker.request_stop()
    await task
    return seen, sleeps


async def test_one_bad_point_is_dead_lettered_alone_and_the_rest_written() -> None:
    queue, store = InMemoryQueue(), InMemoryMetricStore()
    await queue.publish(MetricBatch("good-before", "p", T0, points(3, set())))
    await queue.publish(MetricBatch("mixed", "p", T0, points(100, {37, 80})))
    await queue.publish(MetricBatch("good-after", "p", T0, points(3, set())))

    seen, sleeps = await run(queue, store, InMemoryLogStore(), InMemoryLogMetadataStore())

    assert store.count("p") == 3 + 98 + 3
    assert seen.retries == 0 and sleeps == []  # at once: no retry spent on them
    dead = await queue.list()
    assert len(dead) == 1 and len(seen.dead) == 1
    assert "RecordsRejected" in dead[0].reason and "NUL" in dead[0].reason
    part = decode_batch(dead[0].body)
    assert isinstance(part, MetricBatch)
    assert part.message_id == "mixed"  # a replay writes them under the message's own id
    assert [p.value for p in part.points] == [37.0, 80.0]
    assert await queue.depth(Stream.METRICS) == 0  # the message itself was acked


async def test_a_message_of_bad_records_only_is_dead_lettered_whole_at_once() -> None:
    queue, store = InMemoryQueue(), InMemoryMetricStore()
    await queue.publish(MetricBatch("all-bad", "p", T0, points(4, {0, 1, 2, 3})))

    seen, sleeps = await run(queue, store, InMemoryLogStore(), InMemoryLogMetadataStore())

    assert store.count("p") == 0 and sleeps == [] and seen.retries == 0
    dead = await queue.list()
    assert len(dead) == 1 and len(decode_batch(dead[0].body).points) == 4  # type: ignore[union-attr]


async def test_a_refused_log_is_in_neither_store_and_its_neighbours_in_both() -> None:
    queue = InMemoryQueue()
    logs, metadata = InMemoryLogStore(), InMemoryLogMetadataStore()
    await queue.publish(LogBatch("logs-1", "p", T0, records("logs-1", 9, {4})))

    seen, sleeps = await run(queue, InMemoryMetricStore(), logs, metadata)

    assert sleeps == [] and len(seen.dead) == 1
    for i in range(9):
        stored = await logs.get("p", log_id_for("logs-1", i))
        assert (stored is None) == (i == 4)
    assert await metadata.count("p", _all_time()) == 8
    part = decode_batch((await queue.list())[0].body)
    assert [r.id for r in part.records] == [log_id_for("logs-1", 4)]  # type: ignore[union-attr]


async def test_a_redelivered_mixed_message_writes_nothing_twice() -> None:
    """The parts carry ids derived from their positions: a redelivery after a crash bisects
    the same way and the inbox skips what was written."""
    store = InMemoryMetricStore()
    for _ in range(2):
        queue = InMemoryQueue()
        await queue.publish(MetricBatch("mixed", "p", T0, points(50, {10})))
        await run(queue, store, InMemoryLogStore(), InMemoryLogMetadataStore())
    assert store.count("p") == 49


def _all_time() -> Any:
    from opspilot.domain.timewindow import TimeRange

    return TimeRange(datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
