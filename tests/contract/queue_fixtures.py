"""Fixtures for the ingest-queue contract: one harness per adapter, the same tests for both.

The RabbitMQ harness needs OPSPILOT_AMQP_URL. Without it (or with the broker unreachable)
its tests skip, unless CI or OPSPILOT_REQUIRE_SERVICES=1 is set: then they fail. Every
RabbitMQ harness uses its own queue-name prefix and deletes its queues afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, NoReturn

import aio_pika
import attrs
import pytest

from opspilot.adapters.memory.queue import InMemoryQueue
from opspilot.adapters.rabbitmq.consumer import RabbitMQConsumer
from opspilot.adapters.rabbitmq.dead_letters import RabbitMQDeadLetters
from opspilot.adapters.rabbitmq.queue import RabbitMQQueue
from opspilot.adapters.rabbitmq.topology import dlq_name, queue_name
from opspilot.domain.ingest import Stream
from tests.services import services_required, unavailable

BACKENDS = ["memory", "rabbitmq"]


def _unavailable(reason: str) -> NoReturn:
    unavailable("RabbitMQ", reason)


_UNREACHABLE: dict[str, str] = {}  # url -> why; probed once per test session


async def amqp_url_or_skip() -> str:
    """The broker URL once the broker answers (waiting up to 30 s for it to come up)."""
    url = os.environ.get("OPSPILOT_AMQP_URL")
    if not url:
        _unavailable("OPSPILOT_AMQP_URL is not set")
        raise AssertionError("unreachable")
    if url in _UNREACHABLE:
        _unavailable(_UNREACHABLE[url])
    error: BaseException | None = None
    deadline = asyncio.get_running_loop().time() + (30.0 if services_required() else 3.0)
    while asyncio.get_running_loop().time() < deadline:
        try:
            connection = await aio_pika.connect(url, timeout=3)
        except Exception as exc:  # any failure to connect means: not available (yet)
            error = exc
            await asyncio.sleep(0.5)
            continue
        await connection.close()
        return url
    _UNREACHABLE[url] = f"{url}: {error!r}"
    _unavailable(_UNREACHABLE[url])
    raise AssertionError("unreachable")


def unique_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}."


async def delete_queues(url: str, prefix: str) -> None:
    connection = await aio_pika.connect(url, timeout=5)
    try:
        for stream in Stream:
            for name in (queue_name(prefix, stream), dlq_name(prefix, stream)):
                channel = await connection.channel()
                with contextlib.suppress(Exception):
                    await channel.queue_delete(name)
                with contextlib.suppress(Exception):
                    await channel.close()
    finally:
        await connection.close()


@attrs.define
class QueueHarness:
    """One adapter seen through the ports: a publisher (IngestQueue + publish_raw),
    consumers (IngestConsumer), dead letters (DeadLetterQueue), and a depth probe."""

    kind: str
    publisher: Any
    dead_letters: Any
    _new_consumer: Callable[[int], Any]
    consumers: list[Any] = attrs.field(factory=list)

    def consumer(self, prefetch: int = 50) -> Any:
        made = self._new_consumer(prefetch)
        self.consumers.append(made)
        return made

    async def depth(self, stream: Stream) -> int:
        return int(await self.publisher.depth(stream))


class Pump:
    """Drains a consumer's delivery iterator in a task, so tests can wait for "n
    deliveries" or "nothing more" with timeouts without cancelling the iterator."""

    def __init__(self, consumer: Any, streams: Sequence[Stream]) -> None:
        self.consumer = consumer
        self.received: asyncio.Queue[Any] = asyncio.Queue()
        self._task = asyncio.create_task(self._run(streams))

    async def _run(self, streams: Sequence[Stream]) -> None:
        async for delivery in self.consumer.deliveries(streams):
            self.received.put_nowait(delivery)

    async def take(self, n: int, within: float = 10.0) -> list[Any]:
        taken = []
        async with asyncio.timeout(within):
            for _ in range(n):
                taken.append(await self.received.get())
        return taken

    async def nothing_more(self, wait: float = 0.7) -> bool:
        await asyncio.sleep(wait)
        return self.received.empty()

    async def stop(self) -> None:
        await self.consumer.stop()
        async with asyncio.timeout(10):
            await self._task


HarnessFactory = Callable[..., Awaitable[QueueHarness]]


@pytest.fixture(params=BACKENDS)
async def queue_harness_factory(request: pytest.FixtureRequest) -> AsyncIterator[HarnessFactory]:
    """`await factory(max_depth=...)` builds a fresh, isolated harness."""
    built: list[tuple[QueueHarness, str | None, str | None]] = []
    url = await amqp_url_or_skip() if request.param == "rabbitmq" else None

    async def factory(max_depth: int = 10_000) -> QueueHarness:
        if url is None:
            harness = _memory_harness(max_depth)
            built.append((harness, None, None))
            return harness
        prefix = unique_prefix()
        harness = await _rabbitmq_harness(url, prefix, max_depth)
        built.append((harness, url, prefix))
        return harness

    yield factory
    for harness, broker, prefix in built:
        for consumer in harness.consumers:
            await consumer.stop()
        if broker is not None and prefix is not None:
            await harness.publisher.close()
            await harness.dead_letters.close()
            await delete_queues(broker, prefix)


def _memory_harness(max_depth: int) -> QueueHarness:
    queue = InMemoryQueue(max_depth=max_depth)

    def consumer(prefetch: int) -> InMemoryQueue:
        queue.prefetch = prefetch  # the in-memory queue is its own (single) consumer
        return queue

    return QueueHarness("memory", queue, queue, consumer)


async def _rabbitmq_harness(url: str, prefix: str, max_depth: int) -> QueueHarness:
    publisher = RabbitMQQueue(url, prefix=prefix, max_depth=max_depth)
    await publisher.connect()
    dead = RabbitMQDeadLetters(url, prefix=prefix)
    await dead.connect()

    def consumer(prefetch: int) -> RabbitMQConsumer:
        return RabbitMQConsumer(url, prefix=prefix, prefetch=prefetch)

    return QueueHarness("rabbitmq", publisher, dead, consumer)
