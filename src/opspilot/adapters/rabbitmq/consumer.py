"""The worker's side of the ingest queue on RabbitMQ.

Each `deliveries()` call consumes the given streams on its own connection and channel with
a per-consumer prefetch, so at most `prefetch` messages are unacknowledged at a time (split
evenly between the streams: quorum queues do not support a channel-wide prefetch). Nothing is
acknowledged here: a Delivery is acked by the worker after the stores committed, or
dead-lettered (copied to `<queue>.dlq` with the reason, confirmed, and only then acked).
`stop()` cancels the consumers and closes the channel, which hands every unacknowledged
message back to the broker for the next consumer.

If the connection drops (broker restart), the iterator reconnects by itself with a capped
backoff; deliveries of the lost channel can no longer be acked and the broker redelivers
them, which the idempotent stores absorb.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from opspilot.adapters.queue_wire_format import DecodedDelivery, encode_batch
from opspilot.adapters.rabbitmq._amqp import (
    DRIVER_ERRORS,
    broker_errors,
    close_quietly,
    confirmed_publish,
    describe,
    open_connection,
    persistent_message,
)
from opspilot.adapters.rabbitmq.topology import declare_topology, dlq_name, queue_name
from opspilot.domain.errors import ServiceUnavailable
from opspilot.domain.ingest import LogBatch, MetricBatch, Stream

log = logging.getLogger(__name__)

# The worker writes up to 1000 records per flush and a message carries up to 10,000 records
# (10 MB): 64 in flight fill a flush with batches of 16+ records while bounding what one
# worker holds in memory; scale out with more workers, not a deeper prefetch.
DEFAULT_PREFETCH = 64
MAX_REASON_CHARS = 2000


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _Signal:
    """What the inbox carries besides messages."""

    def __init__(self, name: str) -> None:
        self.name = name


_STOP = _Signal("stop")
_LOST = _Signal("lost")
_Item = tuple[Stream, AbstractIncomingMessage] | _Signal


@attrs.define
class _Session:
    connection: AbstractConnection
    channel: AbstractChannel
    inbox: asyncio.Queue[_Item]
    streams: tuple[Stream, ...]

    async def close(self, cancel_timeout: float) -> None:
        # Closing the channel returns every unacked message to its queue, redelivered=True.
        with contextlib.suppress(*DRIVER_ERRORS):
            async with asyncio.timeout(cancel_timeout):
                await self.channel.close()
        await close_quietly(self.connection)


class RabbitMQConsumer:
    """Implements IngestConsumer on RabbitMQ (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "",
        prefetch: int = DEFAULT_PREFETCH,
        confirm_timeout: float = 5.0,
        connect_timeout: float = 3.0,
        reconnect_delay: float = 1.0,
        max_reconnect_delay: float = 30.0,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        self._url = url
        self.prefix = prefix
        self.prefetch = prefetch
        self._confirm_timeout = confirm_timeout
        self._connect_timeout = connect_timeout
        self._reconnect_delay = reconnect_delay
        self._max_reconnect_delay = max_reconnect_delay
        self._now = now
        self._session: _Session | None = None
        self._stopping = asyncio.Event()

    async def deliveries(self, streams: Sequence[Stream]) -> AsyncIterator[RabbitMQDelivery]:
        self._stopping.clear()
        failures = 0
        while not self._stopping.is_set():
            try:
                session = await self._session_for(tuple(streams))
            except ServiceUnavailable as exc:
                failures += 1
                log.warning("cannot consume %s (attempt %d): %s",
                            [s.value for s in streams], failures, exc.message)
                await self._pause(failures)
                continue
            failures = 0
            while True:
                item = await session.inbox.get()
                if isinstance(item, _Signal):
                    break
                stream, message = item
                yield RabbitMQDelivery(self, session.channel, stream, message)
            if item is _LOST and not self._stopping.is_set():
                log.warning("lost the broker connection; reconnecting")
                await self._discard(session)
                await self._pause(1)

    async def stop(self) -> None:
        """End the iterator and hand unacknowledged messages back; idempotent."""
        self._stopping.set()
        session, self._session = self._session, None
        if session is not None:
            session.inbox.put_nowait(_STOP)
            await session.close(self._confirm_timeout)

    # -- internals -----------------------------------------------------------------------

    async def _session_for(self, streams: tuple[Stream, ...]) -> _Session:
        """The live session when an earlier iterator was abandoned (e.g. cancelled while
        waiting): its unacked deliveries stay valid and its inbox loses nothing."""
        session = self._session
        if session is not None:
            if session.streams == streams and not session.channel.is_closed:
                return session
            await self._discard(session)
        return await self._start(streams)

    async def _start(self, streams: tuple[Stream, ...]) -> _Session:
        connection = await open_connection(self._url, self._connect_timeout)
        try:
            with broker_errors("start consuming"):
                session = await self._consume(connection, streams)
        except BaseException:
            await close_quietly(connection)
            raise
        if self._stopping.is_set():  # stop() ran while we were connecting
            await session.close(self._confirm_timeout)
            session.inbox.put_nowait(_STOP)
        else:
            self._session = session
        return session

    async def _consume(
        self, connection: AbstractConnection, streams: tuple[Stream, ...]
    ) -> _Session:
        await declare_topology(connection, self.prefix, streams)
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        # Per-consumer prefetch (global=False): quorum queues refuse a channel-wide one.
        await channel.set_qos(prefetch_count=max(1, self.prefetch // len(streams)))
        inbox: asyncio.Queue[_Item] = asyncio.Queue()

        def lost(*_: Any) -> None:
            inbox.put_nowait(_LOST)

        connection.close_callbacks.add(lost)
        channel.close_callbacks.add(lost)
        for stream in streams:
            queue = await channel.get_queue(queue_name(self.prefix, stream), ensure=False)
            await queue.consume(_enqueue(inbox, stream), no_ack=False)
        return _Session(connection, channel, inbox, streams)

    async def _discard(self, session: _Session) -> None:
        if self._session is session:
            self._session = None
        await session.close(self._confirm_timeout)

    async def _pause(self, failures: int) -> None:
        delay = min(self._max_reconnect_delay, self._reconnect_delay * 2 ** (failures - 1))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    def _dead_letter_target(self, stream: Stream) -> tuple[str, str]:
        return queue_name(self.prefix, stream), dlq_name(self.prefix, stream)


def _enqueue(
    inbox: asyncio.Queue[_Item], stream: Stream
) -> Callable[[AbstractIncomingMessage], Any]:
    async def on_message(message: AbstractIncomingMessage) -> None:
        inbox.put_nowait((stream, message))

    return on_message


class RabbitMQDelivery(DecodedDelivery):
    """One consumed message (implements Delivery). Besides the decoded batch it exposes the
    raw `body`, `stream` and `message_id`, for consumers of non-batch streams (alerts)."""

    def __init__(
        self,
        consumer: RabbitMQConsumer,
        channel: AbstractChannel,
        stream: Stream,
        message: AbstractIncomingMessage,
    ) -> None:
        self._consumer = consumer
        self._channel = channel
        self._message = message
        self.stream = stream
        self._settled = False
        super().__init__(message.body)

    @property
    def redelivered(self) -> bool:
        return bool(self._message.redelivered)

    @property
    def body(self) -> bytes:
        return self._message.body

    @property
    def message_id(self) -> str | None:
        return self._message.message_id

    async def ack(self) -> None:
        """Idempotent. On a channel that is already gone the ack cannot be sent; the broker
        then redelivers the message and the idempotent stores make that harmless."""
        if self._settled:
            return
        self._settled = True
        try:
            await self._message.ack()
        except DRIVER_ERRORS as exc:
            log.warning("ack of %s lost (%s); it will be redelivered",
                        self.message_id, describe(exc))

    async def dead_letter(self, reason: str) -> None:
        """Copy the message to the stream's DLQ with the reason, wait for the broker's
        confirm, then ack the original: a crash in between leaves a duplicate in the DLQ,
        never a loss. If the copy fails the original is requeued to be tried again."""
        if self._settled:
            return
        if await self._copy_to_dlq(self._message.body, reason):
            await self.ack()

    async def set_aside(self, part: MetricBatch | LogBatch, reason: str) -> bool:
        """The DLQ copy carries only `part`, with the original message id and headers."""
        if self._settled:
            return False
        return await self._copy_to_dlq(encode_batch(part), reason)

    async def _copy_to_dlq(self, body: bytes, reason: str) -> bool:
        queue, dlq = self._consumer._dead_letter_target(self.stream)
        copy = persistent_message(
            body, self.message_id,
            headers=self._dead_letter_headers(reason, queue),
            content_type=self._message.content_type or "application/json",
        )
        try:
            with broker_errors(f"dead-letter to {dlq}"):
                await confirmed_publish(self._channel, dlq, copy, self._consumer._confirm_timeout)
        except ServiceUnavailable as exc:
            log.error("could not dead-letter %s (%s); requeueing it", self.message_id, exc.message)
            await self._requeue()
            return False
        return True

    def _dead_letter_headers(self, reason: str, queue: str) -> dict[str, Any]:
        return {
            **(self._message.headers or {}),
            "x-reason": reason[:MAX_REASON_CHARS],
            "x-original-queue": queue,
            "x-stream": self.stream.value,
            "x-failed-at": self._consumer._now().isoformat(),
        }

    async def _requeue(self) -> None:
        self._settled = True
        with contextlib.suppress(*DRIVER_ERRORS):
            await self._message.nack(requeue=True)
