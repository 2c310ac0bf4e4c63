"""The ingest-queue contract (IngestQueue + IngestConsumer + DeadLetterQueue), run against the
in-memory queue and RabbitMQ alike, so the in-memory one stays a trustworthy fake."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from opspilot.adapters.queue_wire_format import encode_batch
from opspilot.domain.errors import RateLimited
from opspilot.domain.ingest import LogBatch, MetricBatch, Stream
from opspilot.domain.logs import LogLevel, LogRecord, log_id_for
from opspilot.domain.metrics import MetricPoint
from tests.contract.queue_fixtures import HarnessFactory, Pump
from tests.contract.queue_fixtures import queue_harness_factory as queue_harness_factory

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def metric_batch(n: int, points: int = 3, project: str = "p1") -> MetricBatch:
    return MetricBatch(
        f"m-{n:04d}", project, T0,
        [MetricPoint(project, T0 + timedelta(seconds=i), "cpu", float(i), "api", {"host": "a"})
         for i in range(points)],
    )


def log_batch(n: int, records: int = 2, project: str = "p1") -> LogBatch:
    message_id = f"l-{n:04d}"
    return LogBatch(
        message_id, project, T0,
        [LogRecord(log_id_for(message_id, i), project, T0 + timedelta(seconds=i),
                   LogLevel.ERROR, f"boom {i}", "api", "trace", None, {"k": i})
         for i in range(records)],
    )


async def test_published_batches_are_consumed_unchanged(
    queue_harness_factory: HarnessFactory,
) -> None:
    harness = await queue_harness_factory()
    sent = [metric_batch(1), log_batch(1)]
    for batch in sent:
        await harness.publisher.publish(batch)
    pump = Pump(harness.consumer(), [Stream.METRICS, Stream.LOGS])

    got = await pump.take(2)

    assert sorted(encode_batch(d.batch) for d in got) == sorted(encode_batch(b) for b in sent)
    assert all(d.error is None and not d.redelivered for d in got)
    for delivery in got:
        await delivery.ack()
    await pump.stop()


async def test_order_is_kept_within_a_stream(queue_harness_factory: HarnessFactory) -> None:
    harness = await queue_harness_factory()
    for n in range(20):
        await harness.publisher.publish(metric_batch(n, points=1))
    pump = Pump(harness.consumer(prefetch=50), [Stream.METRICS])

    got = await pump.take(20)

    assert [d.batch.message_id for d in got] == [f"m-{n:04d}" for n in range(20)]
    for delivery in got:
        await delivery.ack()
    await pump.stop()


async def test_acked_messages_are_gone(queue_harness_factory: HarnessFactory) -> None:
    harness = await queue_harness_factory()
    await harness.publisher.publish(metric_batch(1))
    first = Pump(harness.consumer(), [Stream.METRICS])
    (delivery,) = await first.take(1)
    await delivery.ack()
    await delivery.ack()  # settling twice is harmless
    await first.stop()

    second = Pump(harness.consumer(), [Stream.METRICS])

    assert await second.nothing_more()
    assert await harness.depth(Stream.METRICS) == 0
    await second.stop()


async def test_unacked_messages_go_to_the_next_consumer_after_stop(
    queue_harness_factory: HarnessFactory,
) -> None:
    harness = await queue_harness_factory()
    for n in range(3):
        await harness.publisher.publish(metric_batch(n))
    first = Pump(harness.consumer(), [Stream.METRICS])
    taken = await first.take(3)
    await taken[0].ack()
    await first.stop()

    second = Pump(harness.consumer(), [Stream.METRICS])
    again = await second.take(2)

    assert {d.batch.message_id for d in again} == {"m-0001", "m-0002"}
    assert all(d.redelivered for d in again)
    assert await second.nothing_more()
    for delivery in again:
        await delivery.ack()
    await second.stop()


async def test_dead_letters_can_be_listed_and_replayed(
    queue_harness_factory: HarnessFactory,
) -> None:
    harness = await queue_harness_factory()
    batch = log_batch(7)
    await harness.publisher.publish(batch)
    pump = Pump(harness.consumer(), [Stream.METRICS, Stream.LOGS])
    (delivery,) = await pump.take(1)

    await delivery.dead_letter("ValueError: the store refused it")

    listed = await harness.dead_letters.list()
    assert [(d.stream, d.reason, d.body) for d in listed] == [
        ("logs.ingest", "ValueError: the store refused it", encode_batch(batch))
    ]
    assert listed[0].at is not None
    assert len(await harness.dead_letters.list()) == 1  # listing does not consume
    assert await pump.nothing_more()

    assert await harness.dead_letters.replay() == 1

    (again,) = await pump.take(1)
    assert encode_batch(again.batch) == encode_batch(batch)
    assert await harness.dead_letters.list() == []
    await again.ack()
    await pump.stop()


async def test_set_aside_dead_letters_only_the_part_and_leaves_the_message_to_ack(
    queue_harness_factory: HarnessFactory,
) -> None:
    """Issue #15: the worker dead-letters the records a store refused, not their message."""
    harness = await queue_harness_factory()
    whole = metric_batch(3, points=5)
    await harness.publisher.publish(whole)
    pump = Pump(harness.consumer(), [Stream.METRICS])
    (delivery,) = await pump.take(1)
    part = MetricBatch(whole.message_id, whole.project_id, whole.received_at, whole.points[2:3])

    assert await delivery.set_aside(part, "RecordsRejected: NUL") is True
    await delivery.ack()

    (letter,) = await harness.dead_letters.list()
    assert (letter.stream, letter.reason, letter.body) == (
        "metrics.ingest", "RecordsRejected: NUL", encode_batch(part))
    assert await pump.nothing_more()
    assert await harness.depth(Stream.METRICS) == 0
    assert await harness.dead_letters.replay() == 1
    (replayed,) = await pump.take(1)
    assert encode_batch(replayed.batch) == encode_batch(part)
    await replayed.ack()
    await pump.stop()


async def test_replay_respects_its_limit(queue_harness_factory: HarnessFactory) -> None:
    harness = await queue_harness_factory()
    for n in range(3):
        await harness.publisher.publish(metric_batch(n))
    pump = Pump(harness.consumer(), [Stream.METRICS])
    for delivery in await pump.take(3):
        await delivery.dead_letter("nope")
    assert len(await harness.dead_letters.list(limit=2)) == 2

    assert await harness.dead_letters.replay(limit=2) == 2

    assert len(await pump.take(2)) == 2
    assert len(await harness.dead_letters.list()) == 1
    await pump.stop()


async def test_undecodable_bytes_arrive_as_an_error_and_can_be_dead_lettered(
    queue_harness_factory: HarnessFactory,
) -> None:
    harness = await queue_harness_factory()
    await harness.publisher.publish_raw(Stream.LOGS, b"\x00not json at all")
    pump = Pump(harness.consumer(), [Stream.LOGS])

    (delivery,) = await pump.take(1)

    assert delivery.batch is None
    assert delivery.error
    await delivery.dead_letter(f"undecodable: {delivery.error}")
    (letter,) = await harness.dead_letters.list()
    assert letter.body == b"\x00not json at all"
    assert letter.reason.startswith("undecodable: ")
    await pump.stop()


async def test_a_full_backlog_refuses_publishing(queue_harness_factory: HarnessFactory) -> None:
    harness = await queue_harness_factory(max_depth=2)
    await harness.publisher.publish(metric_batch(1))
    await harness.publisher.publish(metric_batch(2))

    with pytest.raises(RateLimited) as refused:
        await harness.publisher.publish(metric_batch(3))

    assert refused.value.retry_after > 0
    await harness.publisher.publish(log_batch(1))  # other streams are not held back
    assert await harness.depth(Stream.METRICS) == 2


async def test_prefetch_bounds_unacked_deliveries(queue_harness_factory: HarnessFactory) -> None:
    harness = await queue_harness_factory()
    for n in range(8):
        await harness.publisher.publish(metric_batch(n, points=1))
    pump = Pump(harness.consumer(prefetch=3), [Stream.METRICS])

    held = await pump.take(3)
    assert await pump.nothing_more()

    await held[0].ack()
    (fourth,) = await pump.take(1)
    assert fourth.batch.message_id == "m-0003"
    assert await pump.nothing_more()
    await pump.stop()


async def test_prefetch_is_a_total_over_streams(queue_harness_factory: HarnessFactory) -> None:
    harness = await queue_harness_factory()
    for n in range(5):
        await harness.publisher.publish(metric_batch(n, points=1))
        await harness.publisher.publish(log_batch(n, records=1))
    pump = Pump(harness.consumer(prefetch=4), [Stream.METRICS, Stream.LOGS])

    await pump.take(4)

    assert await pump.nothing_more()
    await pump.stop()
