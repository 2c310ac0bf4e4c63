"""Queue layout on the broker, declared idempotently by every process that uses it.

For each stream (metrics.ingest, logs.ingest, alerts.evaluate), with an optional name prefix
that isolates test runs or installations sharing one broker ("" in production):

- `<prefix><stream>`: a durable quorum queue (replicated, fsynced before the confirm). Its
  dead-letter route points at the DLQ below, so a message the broker itself gives up on
  (quorum delivery limit reached after repeated crashes) lands there instead of being
  dropped; `at-least-once` dead-lettering keeps it until the DLQ confirms it.
- `<prefix><stream>.dlq`: a durable *classic* queue. The application publishes failed
  messages there itself (with x-reason headers). Classic on purpose: listing dead letters
  takes and requeues them, and a quorum queue's delivery limit would eventually discard a
  dead letter that was merely looked at.

A broker that refuses quorum queues (older than 3.8, feature flag off) gets a classic
durable queue with the same dead-letter route. A queue that already exists with other
arguments is used as it is (with a warning): redeclaring could never change it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.exceptions import ChannelClosed
from pamqp.common import FieldTable

from opspilot.domain.ingest import Stream

log = logging.getLogger(__name__)

DLQ_SUFFIX = ".dlq"
QUORUM = "quorum"
CLASSIC = "classic"
EXISTING = "existing"


def queue_name(prefix: str, stream: Stream) -> str:
    return f"{prefix}{stream.value}"


def dlq_name(prefix: str, stream: Stream) -> str:
    return f"{queue_name(prefix, stream)}{DLQ_SUFFIX}"


def main_arguments(prefix: str, stream: Stream, kind: str) -> FieldTable:
    args: FieldTable = {
        "x-queue-type": kind,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dlq_name(prefix, stream),
    }
    if kind == QUORUM:
        # at-least-once dead-lettering requires reject-publish overflow (no length limit is
        # set, so overflow never happens; backpressure is the publisher's depth check)
        args["x-dead-letter-strategy"] = "at-least-once"
        args["x-overflow"] = "reject-publish"
    return args


async def declare_topology(
    connection: AbstractConnection, prefix: str, streams: Iterable[Stream] = tuple(Stream)
) -> dict[Stream, str]:
    """Declare each stream's queue and DLQ; returns the kind each main queue ended up as.

    Raises the driver's connection errors (callers translate them)."""
    declarer = _Declarer(connection)
    kinds: dict[Stream, str] = {}
    try:
        for stream in streams:
            try:
                await declarer.declare(dlq_name(prefix, stream), [{"x-queue-type": CLASSIC}])
            except ChannelClosed as exc:
                if not home_node_down(exc):
                    raise
                # A classic DLQ lives on one node. While that node is down the main (quorum)
                # queue still takes and gives messages, so ingest must go on: only
                # dead-lettering waits (a failed copy requeues the message). Found by the
                # fault suite (ADR 0028): this declare used to fail every reconnect, so one
                # node's loss stopped ingest on all three.
                log.warning("dead-letter queue %s is unavailable (its node is down); "
                            "ingest goes on, dead-lettering waits for it: %s",
                            dlq_name(prefix, stream), exc)
            kinds[stream] = await declarer.declare(
                queue_name(prefix, stream),
                [main_arguments(prefix, stream, QUORUM), main_arguments(prefix, stream, CLASSIC)],
            )
    finally:
        await declarer.close()
    return kinds


def home_node_down(exc: ChannelClosed) -> bool:
    """RabbitMQ's answer for a durable classic queue whose node is down (404 NOT_FOUND,
    "home node '…' of durable queue '…' is down or inaccessible")."""
    text = str(exc)
    return "NOT_FOUND" in text and "home node" in text


class _Declarer:
    """Declares on one channel, opening a fresh one after a refusal (which closes it)."""

    def __init__(self, connection: AbstractConnection) -> None:
        self._connection = connection
        self._channel: AbstractChannel | None = None

    async def declare(self, name: str, variants: list[FieldTable]) -> str:
        for arguments in variants:
            try:
                await (await self._open()).declare_queue(name, durable=True, arguments=arguments)
                return str(arguments["x-queue-type"])
            except ChannelClosed as exc:
                log.info("queue %s refused as %s: %s", name, arguments["x-queue-type"], exc)
                self._channel = None
        await (await self._open()).declare_queue(name, passive=True)
        log.warning("queue %s exists with other arguments than ours; using it as it is", name)
        return EXISTING

    async def _open(self) -> AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel(publisher_confirms=False)
        return self._channel

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
