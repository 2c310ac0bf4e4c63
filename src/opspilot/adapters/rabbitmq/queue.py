"""The API's side of the ingest queue on RabbitMQ: publish with confirms, refuse when behind.

One connection and one confirming channel for the process's lifetime (plus a small channel
for depth look-ups, so a refused look-up never closes the channel that carries publishes).
The connection is plain, not "robust": when it breaks, the failing call raises
ServiceUnavailable and the next call reconnects (at most once per `reconnect_interval`,
re-declaring the topology), so the API recovers by itself after a broker restart and never
parks a request on a connection that is not there.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from aio_pika.abc import AbstractChannel, AbstractConnection
from aio_pika.exceptions import DeliveryError, PublishError

from opspilot.adapters.queue_wire_format import encode_batch
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
from opspilot.domain.errors import RateLimited, ServiceUnavailable
from opspilot.domain.ingest import LogBatch, MetricBatch, Stream

log = logging.getLogger(__name__)


def stream_of(batch: MetricBatch | LogBatch) -> Stream:
    return Stream.METRICS if isinstance(batch, MetricBatch) else Stream.LOGS


class RabbitMQQueue:
    """Implements IngestQueue. `publish` returns only after the broker confirmed a
    persistent message; otherwise it raises ServiceUnavailable (unreachable, channel closed,
    nack, no confirm within `confirm_timeout`) or RateLimited (the stream's ready backlog is
    at `max_depth`). The backlog is read with a passive declare, cached for
    `depth_cache_seconds` and advanced locally by each confirmed publish, so the check costs
    one round trip per stream per second, not one per request."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "",
        max_depth: int = 200_000,
        confirm_timeout: float = 5.0,
        connect_timeout: float = 3.0,
        depth_cache_seconds: float = 1.0,
        reconnect_interval: float = 1.0,
        retry_after: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self.prefix = prefix
        self.max_depth = max_depth
        self._confirm_timeout = confirm_timeout
        self._connect_timeout = connect_timeout
        self._depth_ttl = depth_cache_seconds
        self._reconnect_interval = reconnect_interval
        self._retry_after = retry_after
        self._monotonic = monotonic
        self._connection: AbstractConnection | None = None
        self._publishing: AbstractChannel | None = None
        self._inspecting: AbstractChannel | None = None
        self._reconnecting = asyncio.Lock()
        self._depth_lock = asyncio.Lock()
        self._depths: dict[Stream, tuple[float, int]] = {}
        self._next_attempt = 0.0
        self._closed = False
        self._closing: set[asyncio.Task[None]] = set()

    # -- lifecycle -----------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the connection and declare the topology; raises ServiceUnavailable."""
        self._closed = False
        async with self._reconnecting:
            if not self._is_open():
                await self._open()

    async def close(self) -> None:
        """Idempotent; later publishes raise ServiceUnavailable."""
        self._closed = True
        async with self._reconnecting:
            await self._drop()

    # -- IngestQueue ---------------------------------------------------------------------

    async def publish(self, batch: MetricBatch | LogBatch) -> None:
        await self.publish_raw(stream_of(batch), encode_batch(batch), batch.message_id)

    async def publish_raw(self, stream: Stream, body: bytes, message_id: str | None = None) -> None:
        """Publish bytes as they are (DLQ tooling, tests, foreign producers)."""
        await self._check_backlog(stream)
        channel, _ = await self._channels()
        message = persistent_message(body, message_id or uuid.uuid4().hex)
        with self._failures(f"publish to {stream.value}"):
            await confirmed_publish(
                channel, queue_name(self.prefix, stream), message, self._confirm_timeout
            )
        cached = self._depths.get(stream)
        if cached is not None:
            self._depths[stream] = (cached[0], cached[1] + 1)

    async def ping(self) -> None:
        await self.depth(Stream.METRICS)

    async def depth(self, stream: Stream) -> int:
        """Messages ready in the stream's queue now (unacknowledged ones are not counted)."""
        _, inspecting = await self._channels()
        with self._failures(f"inspect {stream.value}"):
            underlay = await inspecting.get_underlay_channel()
            declared = await underlay.queue_declare(
                queue_name(self.prefix, stream), passive=True, timeout=self._confirm_timeout
            )
        count = int(declared.message_count or 0)
        self._depths[stream] = (self._monotonic(), count)
        return count

    async def dead_letter_depth(self, stream: Stream) -> int:
        """Messages in the stream's dead-letter queue now (not cached; for telemetry)."""
        _, inspecting = await self._channels()
        with self._failures(f"inspect {dlq_name(self.prefix, stream)}"):
            underlay = await inspecting.get_underlay_channel()
            declared = await underlay.queue_declare(
                dlq_name(self.prefix, stream), passive=True, timeout=self._confirm_timeout
            )
        return int(declared.message_count or 0)

    # -- internals -----------------------------------------------------------------------

    async def _check_backlog(self, stream: Stream) -> None:
        depth = await self._cached_depth(stream)
        if depth >= self.max_depth:
            raise RateLimited(
                f"{stream.value} backlog is full", retry_after=self._retry_after,
                depth=depth, max_depth=self.max_depth,
            )

    async def _cached_depth(self, stream: Stream) -> int:
        cached = self._depths.get(stream)
        if cached is not None and self._monotonic() - cached[0] < self._depth_ttl:
            return cached[1]
        async with self._depth_lock:  # one look-up per stream at a time; the rest reuse it
            cached = self._depths.get(stream)
            if cached is not None and self._monotonic() - cached[0] < self._depth_ttl:
                return cached[1]
            # shielded: a cancelled request must not cancel the look-up others wait for
            # (a cancelled RPC also makes aiormq close the channel)
            return await asyncio.shield(self.depth(stream))

    async def _channels(self) -> tuple[AbstractChannel, AbstractChannel]:
        """The publishing and the inspecting channel, reconnecting first if need be."""
        if self._closed:
            raise ServiceUnavailable("the ingest queue is shut down", retry_after=self._retry_after)
        if not self._is_open():
            async with self._reconnecting:
                if not self._is_open():
                    await self._repair()
        if self._publishing is None or self._inspecting is None:  # dropped meanwhile
            raise ServiceUnavailable("broker connection lost", retry_after=self._retry_after)
        return self._publishing, self._inspecting

    async def _repair(self) -> None:
        """Reopen only what broke: a channel closed by a refused or timed-out call is
        replaced on the live connection, so publishes in flight on the other survive."""
        connection = self._connection
        if connection is None or connection.is_closed:
            await self._reopen()
            return
        with self._failures("reopen channel"):
            if self._publishing is None or self._publishing.is_closed:
                self._publishing = await connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
            if self._inspecting is None or self._inspecting.is_closed:
                self._inspecting = await connection.channel(publisher_confirms=False)

    async def _reopen(self) -> None:
        now = self._monotonic()
        if now < self._next_attempt:
            raise ServiceUnavailable(
                "message broker unavailable (reconnecting)", retry_after=self._retry_after
            )
        try:
            await self._open()
        except ServiceUnavailable:
            self._next_attempt = now + self._reconnect_interval
            raise

    async def _open(self) -> None:
        await self._drop()
        connection = await open_connection(self._url, self._connect_timeout)
        try:
            with broker_errors("declare topology", self._retry_after):
                await declare_topology(connection, self.prefix)
                publishing = await connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
                inspecting = await connection.channel(publisher_confirms=False)
        except BaseException:
            await close_quietly(connection)
            raise
        self._connection, self._publishing, self._inspecting = connection, publishing, inspecting
        self._depths.clear()
        log.info("connected to the message broker (queue prefix %r)", self.prefix)

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        self._publishing = self._inspecting = None
        await close_quietly(connection)

    def _is_open(self) -> bool:
        return not any(
            part is None or part.is_closed
            for part in (self._connection, self._publishing, self._inspecting)
        )

    @contextmanager
    def _failures(self, action: str) -> Iterator[None]:
        """Translate a failed broker call; a broken connection or channel is dropped so the
        next call reconnects, a nack or a slow confirm (broker alarm) keeps it."""
        try:
            yield
        except PublishError as exc:  # unroutable: the queue is gone, re-declare it
            self._forget()
            raise self._unavailable(action, exc) from None
        except (DeliveryError, TimeoutError) as exc:
            raise self._unavailable(action, exc) from None
        except DRIVER_ERRORS as exc:
            self._forget()
            raise self._unavailable(action, exc) from None

    def _forget(self) -> None:
        connection, self._connection = self._connection, None
        self._publishing = self._inspecting = None
        if connection is not None and not connection.is_closed:
            task = asyncio.get_running_loop().create_task(close_quietly(connection))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _unavailable(self, action: str, exc: BaseException) -> ServiceUnavailable:
        log.warning("broker call failed (%s): %s", action, describe(exc))
        return ServiceUnavailable(
            f"message broker unavailable ({action}): {describe(exc)}",
            retry_after=self._retry_after,
        )
