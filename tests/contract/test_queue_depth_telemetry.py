"""The `QueueDepth` port's `dead_letter_depth(stream)`, read by the worker's queue-depth
sampler, on the in-memory queue and RabbitMQ alike."""

from __future__ import annotations

import asyncio

from opspilot.domain.ingest import Stream
from opspilot.domain.ports import QueueDepth
from tests.contract.queue_fixtures import HarnessFactory, Pump
from tests.contract.queue_fixtures import queue_harness_factory as queue_harness_factory
from tests.contract.test_ingest_queue import log_batch, metric_batch


async def _dead_depth(publisher: QueueDepth, stream: Stream) -> int:
    return await publisher.dead_letter_depth(stream)


async def test_dead_letter_depth_counts_each_streams_dead_letters(
    queue_harness_factory: HarnessFactory,
) -> None:
    harness = await queue_harness_factory()
    assert await _dead_depth(harness.publisher, Stream.METRICS) == 0
    for n in range(2):
        await harness.publisher.publish(metric_batch(n))
    await harness.publisher.publish(log_batch(1))
    pump = Pump(harness.consumer(), [Stream.METRICS, Stream.LOGS])
    for delivery in await pump.take(3):
        if delivery.batch.message_id.startswith("m-"):
            await delivery.dead_letter("the store refused it")
        else:
            await delivery.ack()
    await pump.stop()
    depths: tuple[int, int] = (-1, -1)
    for _ in range(50):  # the broker's count follows the confirm closely, not instantly
        depths = (await _dead_depth(harness.publisher, Stream.METRICS),
                  await _dead_depth(harness.publisher, Stream.LOGS))
        if depths == (2, 0):
            break
        await asyncio.sleep(0.1)
    assert depths == (2, 0)
    assert await harness.depth(Stream.METRICS) == 0
