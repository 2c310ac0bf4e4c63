"""In-process ingest queue: the embedded shape's broker.

Real code, not a stub: messages pass through the same queue wire format as on RabbitMQ,
are held until acknowledged, go back to the queue if the consumer stops without acking, and can be
dead-lettered and replayed. A depth limit gives the same backpressure as the real broker.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import attrs

from opspilot.adapters.queue_wire_format import DecodedDelivery, encode_batch
from opspilot.domain.errors import RateLimited
from opspilot.domain.ingest import LogBatch, MetricBatch, Stream
from opspilot.domain.ports import DeadLetter


@attrs.define
class _Message:
    id: int
    stream: Stream
    body: bytes
    redelivered: bool = False


def stream_of(batch: MetricBatch | LogBatch) -> Stream:
    return Stream.METRICS if isinstance(batch, MetricBatch) else Stream.LOGS


class InMemoryQueue:
    """Publisher, consumer and dead-letter queue in one object."""

    def __init__(self, max_depth: int = 100_000, prefetch: int = 64) -> None:
        self._ready: dict[Stream, deque[_Message]] = {s: deque() for s in Stream}
        self._unacked: dict[int, _Message] = {}
        self._dead: list[tuple[_Message, str, datetime]] = []
        self._arrived = asyncio.Condition()
        self._ids = 0
        self._stopped = False
        self.max_depth = max_depth
        self.prefetch = prefetch

    async def publish(self, batch: MetricBatch | LogBatch) -> None:
        await self.publish_raw(stream_of(batch), encode_batch(batch))

    async def publish_raw(self, stream: Stream, body: bytes) -> None:
        if self.waiting(stream) >= self.max_depth:
            raise RateLimited(f"{stream.value} backlog is full", retry_after=5.0)
        self._ids += 1
        async with self._arrived:
            self._ready[stream].append(_Message(self._ids, stream, body))
            self._arrived.notify_all()

    async def ping(self) -> None:
        return None

    def waiting(self, stream: Stream) -> int:
        """Messages of `stream` not yet acknowledged (ready or taken), now."""
        return len(self._ready[stream]) + sum(1 for m in self._unacked.values() if m.stream is stream)

    async def depth(self, stream: Stream) -> int:
        return self.waiting(stream)

    async def dead_letter_depth(self, stream: Stream) -> int:
        return sum(1 for message, _, _ in self._dead if message.stream is stream)

    async def deliveries(self, streams: Sequence[Stream]) -> AsyncIterator[InMemoryDelivery]:
        self._stopped = False
        while not self._stopped:
            message = await self._next(streams)
            if message is not None:
                self._unacked[message.id] = message
                yield InMemoryDelivery(self, message)

    async def _next(self, streams: Sequence[Stream]) -> _Message | None:
        async with self._arrived:
            while not self._stopped:
                if len(self._unacked) < self.prefetch:
                    for stream in streams:
                        if self._ready[stream]:
                            return self._ready[stream].popleft()
                await self._arrived.wait()
        return None

    async def join(self) -> None:
        """Wait until no message is waiting or unacknowledged: every message published so far
        was acknowledged or dead-lettered (as dramatiq's stub broker's `join`)."""
        async with self._arrived:
            await self._arrived.wait_for(
                lambda: not self._unacked and not any(self._ready.values())
            )

    async def stop(self) -> None:
        """Stop delivering and put every unacknowledged message back, as a broker does."""
        async with self._arrived:
            self._stopped = True
            for message in sorted(self._unacked.values(), key=lambda m: m.id, reverse=True):
                message.redelivered = True
                self._ready[message.stream].appendleft(message)
            self._unacked.clear()
            self._arrived.notify_all()

    async def _settle(self, message: _Message, dead_reason: str | None) -> None:
        async with self._arrived:
            if self._unacked.pop(message.id, None) is not None and dead_reason is not None:
                self._dead.append((message, dead_reason, datetime.now(UTC)))
            self._arrived.notify_all()

    async def _set_aside(self, stream: Stream, body: bytes, reason: str) -> None:
        async with self._arrived:
            self._ids += 1
            self._dead.append((_Message(self._ids, stream, body), reason, datetime.now(UTC)))

    # -- dead letters ------------------------------------------------------------------

    async def list(self, limit: int = 100) -> list[DeadLetter]:
        return [
            DeadLetter(str(m.id), m.stream.value, reason, m.body, at)
            for m, reason, at in self._dead[:limit]
        ]

    async def replay(self, limit: int | None = None) -> int:
        chosen = self._dead[:limit] if limit is not None else list(self._dead)
        del self._dead[: len(chosen)]
        for message, _, _ in chosen:
            await self.publish_raw(message.stream, message.body)
        return len(chosen)


class InMemoryDelivery(DecodedDelivery):
    def __init__(self, queue: InMemoryQueue, message: _Message) -> None:
        super().__init__(message.body)
        self._queue = queue
        self._message = message

    @property
    def redelivered(self) -> bool:
        return self._message.redelivered

    async def ack(self) -> None:
        await self._queue._settle(self._message, None)

    async def dead_letter(self, reason: str) -> None:
        await self._queue._settle(self._message, reason)

    async def set_aside(self, part: MetricBatch | LogBatch, reason: str) -> bool:
        await self._queue._set_aside(stream_of(part), encode_batch(part), reason)
        return True
