"""Inspecting and replaying the dead-letter queues `<prefix><stream>.dlq` (implements
DeadLetterQueue).

AMQP cannot peek: `list()` takes messages with basic.get, keeps them unacknowledged while
it reads, then hands them back with basic.nack(requeue=True). Consequences, by design:
- while a listing runs, the messages it holds are invisible to another lister or replayer;
- the DLQs are classic queues, which put a requeued message back at its original position
  when they can, so the order is normally kept, but it is not guaranteed (a concurrent
  publish or listing can interleave);
- a nack'ed message comes back marked redelivered; nothing else about it changes.
`replay()` publishes each dead letter back to its stream's queue with a publisher confirm,
and acks the DLQ copy only then (a crash in between replays it twice, never loses it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue

from opspilot.adapters.rabbitmq._amqp import (
    broker_errors,
    close_quietly,
    confirmed_publish,
    header_text,
    open_connection,
    persistent_message,
)
from opspilot.adapters.rabbitmq.topology import declare_topology, dlq_name, queue_name
from opspilot.domain.ingest import Stream
from opspilot.domain.ports import DeadLetter

log = logging.getLogger(__name__)

_DEAD_LETTER_HEADERS = ("x-reason", "x-original-queue", "x-failed-at")


class RabbitMQDeadLetters:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "",
        streams: Sequence[Stream] = tuple(Stream),
        confirm_timeout: float = 5.0,
        connect_timeout: float = 3.0,
    ) -> None:
        self._url = url
        self.prefix = prefix
        self._streams = tuple(streams)
        self._confirm_timeout = confirm_timeout
        self._connect_timeout = connect_timeout
        self._connection: AbstractConnection | None = None

    async def connect(self) -> None:
        if self._connection is not None and not self._connection.is_closed:
            return
        connection = await open_connection(self._url, self._connect_timeout)
        try:
            with broker_errors("declare topology"):
                await declare_topology(connection, self.prefix, self._streams)
        except BaseException:
            await close_quietly(connection)
            raise
        self._connection = connection

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        await close_quietly(connection)

    async def list(self, limit: int = 100) -> list[DeadLetter]:
        """Up to `limit` dead letters, stream by stream, oldest first within a stream."""
        channel = await self._channel()
        letters: list[DeadLetter] = []
        held: list[AbstractIncomingMessage] = []
        try:
            with broker_errors("list dead letters"):
                for stream in self._streams:
                    queue = await channel.get_queue(dlq_name(self.prefix, stream), ensure=False)
                    while len(letters) < limit:
                        message = await queue.get(no_ack=False, fail=False,
                                                  timeout=self._confirm_timeout)
                        if message is None:
                            break
                        held.append(message)
                        letters.append(_letter(stream, message))
                for message in held:
                    await message.nack(requeue=True)
        finally:
            await close_quietly(channel)  # returns anything still held
        return letters

    async def replay(self, limit: int | None = None) -> int:
        """Move dead letters back to their stream's queue; returns how many. Without a
        limit, replays what each DLQ held when the call started (a message that fails again
        meanwhile waits for the next replay instead of looping)."""
        channel = await self._channel(confirms=True)
        replayed = 0
        try:
            with broker_errors("replay dead letters"):
                for stream in self._streams:
                    queue = await channel.get_queue(dlq_name(self.prefix, stream), ensure=False)
                    budget = await self._budget(queue, limit, replayed)
                    replayed += await self._replay_queue(channel, queue, stream, budget)
        finally:
            await close_quietly(channel)
        return replayed

    async def _budget(self, queue: AbstractQueue, limit: int | None, done: int) -> int:
        held = await self._message_count(queue)
        return held if limit is None else min(held, limit - done)

    async def _message_count(self, queue: AbstractQueue) -> int:
        underlay = await queue.channel.get_underlay_channel()
        declared = await underlay.queue_declare(queue.name, passive=True,
                                                timeout=self._confirm_timeout)
        return int(declared.message_count or 0)

    async def _replay_queue(
        self, channel: AbstractChannel, queue: AbstractQueue, stream: Stream, budget: int
    ) -> int:
        target = queue_name(self.prefix, stream)
        for done in range(budget):
            message = await queue.get(no_ack=False, fail=False, timeout=self._confirm_timeout)
            if message is None:
                return done
            headers = {k: v for k, v in (message.headers or {}).items()
                       if k not in _DEAD_LETTER_HEADERS}
            copy = persistent_message(message.body, message.message_id, headers,
                                      message.content_type or "application/json")
            await confirmed_publish(channel, target, copy, self._confirm_timeout)
            await message.ack()
        return budget

    async def _channel(self, confirms: bool = False) -> AbstractChannel:
        if self._connection is None or self._connection.is_closed:
            await self.connect()
        connection = self._connection
        with broker_errors("open channel"):
            if connection is None:
                raise ConnectionError("closed while connecting")
            return await connection.channel(
                publisher_confirms=confirms, on_return_raises=confirms
            )


def _letter(stream: Stream, message: AbstractIncomingMessage) -> DeadLetter:
    return DeadLetter(
        id=message.message_id or str(message.delivery_tag),
        stream=header_text(message, "x-stream") or stream.value,
        reason=header_text(message, "x-reason") or _broker_reason(message),
        body=message.body,
        at=_parse_time(header_text(message, "x-failed-at")) or message.timestamp,
    )


def _broker_reason(message: AbstractIncomingMessage) -> str:
    """A message the broker dead-lettered itself (quorum delivery limit) has no x-reason."""
    reason = header_text(message, "x-first-death-reason")
    return f"broker: {reason}" if reason else "unknown"


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None

