"""The alert engine's evaluation queue on RabbitMQ: `<prefix>alerts.evaluate`.

The queue is declared by the shared topology (a durable quorum queue with a dead-letter
route to `<prefix>alerts.evaluate.dlq`). The scheduler that owns a tick publishes its rule
chunks as persistent messages and returns only once the broker confirmed every one of them;
evaluators consume with a small prefetch (chunks are big units of work; a low prefetch lets
other replicas take their share) and ack a chunk only after it was evaluated. A chunk whose
evaluator dies comes back to another one. A message that cannot be decoded is rejected to
the dead-letter queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from opspilot.adapters.rabbitmq._amqp import (
    DRIVER_ERRORS,
    broker_errors,
    close_quietly,
    confirmed_publish,
    describe,
    header_text,
    open_connection,
    persistent_message,
)
from opspilot.adapters.rabbitmq.topology import declare_topology, queue_name
from opspilot.domain.errors import ServiceUnavailable
from opspilot.domain.ingest import Stream
from opspilot.domain.ports import EvaluationTask, RuleRef

log = logging.getLogger(__name__)


def encode_task(task: EvaluationTask) -> bytes:
    return orjson.dumps({
        "tick_key": task.tick_key, "at": task.at.isoformat(), "chunk": task.chunk,
        "chunks": task.chunks, "rules": [[r.project_id, r.rule_id] for r in task.rules],
    })


def decode_task(body: bytes) -> EvaluationTask:
    """Raises ValueError (or KeyError/TypeError) for a body that is not a task."""
    doc: Any = orjson.loads(body)
    at = datetime.fromisoformat(doc["at"])
    if at.tzinfo is None:
        raise ValueError("tick time without a time zone")
    rules = tuple(RuleRef(str(p), str(r)) for p, r in doc["rules"])
    return EvaluationTask(str(doc["tick_key"]), at, rules, int(doc["chunk"]), int(doc["chunks"]))


class RabbitMQEvaluationDelivery:
    def __init__(self, message: AbstractIncomingMessage, task: EvaluationTask) -> None:
        self._message = message
        self._task = task

    @property
    def task(self) -> EvaluationTask:
        return self._task

    @property
    def attempt(self) -> int:
        count = header_text(self._message, "x-delivery-count")
        if count is not None and count.isdigit():
            return int(count) + 1
        return 2 if self._message.redelivered else 1

    async def ack(self) -> None:
        with broker_errors("ack an evaluation chunk"):
            await self._message.ack()

    async def retry(self) -> None:
        with broker_errors("requeue an evaluation chunk"):
            await self._message.nack(requeue=True)


class RabbitMQEvaluationQueue:
    """Implements EvaluationQueue. Connection problems raise ServiceUnavailable; the next
    call reconnects (re-declaring the topology)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "",
        prefetch: int = 2,
        confirm_timeout: float = 5.0,
        connect_timeout: float = 3.0,
    ) -> None:
        self._url = url
        self.prefix = prefix
        self.queue_name = queue_name(prefix, Stream.ALERTS)
        self._prefetch = prefetch
        self._confirm_timeout = confirm_timeout
        self._connect_timeout = connect_timeout
        self._connection: AbstractConnection | None = None
        self._publishing: AbstractChannel | None = None
        self._consuming: AbstractChannel | None = None
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._opening = asyncio.Lock()
        self._closed = False

    async def connect(self) -> None:
        self._closed = False
        await self._ensure_open()

    async def close(self) -> None:
        """Idempotent. Chunks taken and not settled go back to the broker."""
        self._closed = True
        await self._drop()

    async def publish(self, tasks: Sequence[EvaluationTask]) -> None:
        channel = await self._publishing_channel()
        messages = [
            persistent_message(encode_task(t), f"{t.tick_key}#{t.chunk}") for t in tasks
        ]
        try:
            await asyncio.gather(*(
                confirmed_publish(channel, self.queue_name, m, self._confirm_timeout)
                for m in messages
            ))
        except Exception as exc:
            await self._drop()
            raise ServiceUnavailable(
                f"evaluation chunks not confirmed by the broker: {describe(exc)}"
            ) from None

    async def take(self, wait_seconds: float) -> RabbitMQEvaluationDelivery | None:
        await self._consuming_channel()
        deadline = asyncio.get_running_loop().time() + max(0.0, wait_seconds)
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                if remaining <= 0:
                    message = self._inbox.get_nowait()
                else:
                    async with asyncio.timeout(remaining):
                        message = await self._inbox.get()
            except (asyncio.QueueEmpty, TimeoutError):
                return None
            delivery = await self._decode(message)
            if delivery is not None:
                return delivery

    async def _decode(self, message: AbstractIncomingMessage) -> RabbitMQEvaluationDelivery | None:
        try:
            return RabbitMQEvaluationDelivery(message, decode_task(message.body))
        except (ValueError, KeyError, TypeError) as exc:
            log.error("undecodable evaluation chunk %s dead-lettered: %s", message.message_id, exc)
            with contextlib.suppress(*DRIVER_ERRORS):
                await message.reject(requeue=False)
            return None

    # -- connection ----------------------------------------------------------------------

    async def _publishing_channel(self) -> AbstractChannel:
        await self._ensure_open()
        if self._publishing is None:
            raise ServiceUnavailable("broker connection lost")
        return self._publishing

    async def _consuming_channel(self) -> AbstractChannel:
        if self._consuming is not None and self._consuming.is_closed:
            await self._drop()  # a dead channel means a dead connection here: start over
        await self._ensure_open()
        async with self._opening:
            if self._consuming is None and self._connection is not None:
                try:
                    with broker_errors("start consuming evaluation chunks"):
                        channel = await self._connection.channel(publisher_confirms=False)
                        await channel.set_qos(prefetch_count=self._prefetch)
                        queue = await channel.get_queue(self.queue_name, ensure=False)
                        await queue.consume(self._inbox.put, no_ack=False)
                except ServiceUnavailable:
                    await self._drop_unlocked()
                    raise
                self._consuming = channel
        if self._consuming is None:
            raise ServiceUnavailable("broker connection lost")
        return self._consuming

    async def _ensure_open(self) -> None:
        if self._closed:
            raise ServiceUnavailable("the evaluation queue is shut down")
        async with self._opening:
            if self._connection is not None and not self._connection.is_closed:
                return
            await self._drop_unlocked()
            connection = await open_connection(self._url, self._connect_timeout)
            try:
                with broker_errors("declare the alerts queue"):
                    await declare_topology(connection, self.prefix, [Stream.ALERTS])
                    self._publishing = await connection.channel(
                        publisher_confirms=True, on_return_raises=True
                    )
            except BaseException:
                await close_quietly(connection)
                raise
            self._connection = connection

    async def _drop(self) -> None:
        async with self._opening:
            await self._drop_unlocked()

    async def _drop_unlocked(self) -> None:
        connection, self._connection = self._connection, None
        self._publishing = self._consuming = None
        # Messages of a dead channel can no longer be acked; the broker redelivers them.
        self._inbox = asyncio.Queue()
        await close_quietly(connection)
