"""What every RabbitMQ adapter shares: opening a connection and translating driver errors.

aio-pika, aiormq and the socket layer raise a zoo of exceptions (AMQPError subclasses,
OSError, TimeoutError, RuntimeError on a closed connection, pamqp frame errors). None of
them leaves this package: callers see `ServiceUnavailable` with a `retry_after`.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, DeliveryMode
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, DeliveryError
from pamqp.commands import Basic
from pamqp.common import FieldTable

from opspilot.domain.errors import ServiceUnavailable

DRIVER_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_EXCEPTIONS, TimeoutError)


@contextmanager
def broker_errors(action: str, retry_after: float = 5.0) -> Iterator[None]:
    """Turn any driver exception raised inside into ServiceUnavailable."""
    try:
        yield
    except DRIVER_ERRORS as exc:
        raise ServiceUnavailable(
            f"message broker unavailable ({action}): {describe(exc)}", retry_after=retry_after
        ) from None


def describe(exc: BaseException) -> str:
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"[:300]


def broker_urls(url: str) -> list[str]:
    """OPSPILOT_AMQP_URL may list a cluster's nodes, comma-separated (ADR 0028)."""
    return [part.strip() for part in url.split(",") if part.strip()]


_first_node = random.randrange(1 << 16)  # this process's starting node: clients spread out


async def open_connection(url: str, connect_seconds: float) -> AbstractConnection:
    """One plain (not robust) connection: the adapters reconnect explicitly, so a broken
    connection surfaces as an error the caller can map instead of a silently waiting call.

    With several nodes listed, each is tried in turn (starting from one picked per process,
    so replicas spread over the cluster) until one accepts: a dead node costs one connect
    attempt, not an outage."""
    urls = broker_urls(url)
    start = _first_node % len(urls) if urls else 0
    last: BaseException | None = None
    for node in urls[start:] + urls[:start]:
        try:
            return await aio_pika.connect(node, timeout=connect_seconds, client_properties=_CLIENT)
        except DRIVER_ERRORS as exc:
            last = exc
    with broker_errors("connect"):
        if last is None:
            raise ConnectionError("no broker URL given")
        raise last


async def close_quietly(closable: Any) -> None:
    """Close a channel or connection that may already be dead; shutdown must not raise."""
    if closable is None or closable.is_closed:
        return
    with suppress(*DRIVER_ERRORS):
        await closable.close()


def header_text(message: AbstractIncomingMessage, name: str) -> str | None:
    value = (message.headers or {}).get(name)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None if value is None else str(value)


_CLIENT: FieldTable = {"connection_name": "opspilot"}


async def confirmed_publish(
    channel: AbstractChannel, routing_key: str, message: aio_pika.Message, confirm_seconds: float
) -> None:
    """Publish through the default exchange and return only once the broker confirmed.

    `channel` must have publisher confirms and `on_return_raises` on: an unroutable message
    (its queue is gone) then raises PublishError instead of being confirmed and dropped.
    Raises the driver's errors; no confirm within `confirm_seconds` raises TimeoutError."""
    result = await channel.default_exchange.publish(
        message, routing_key=routing_key, mandatory=True, timeout=confirm_seconds
    )
    if not isinstance(result, Basic.Ack):
        raise DeliveryError(None, result)  # type: ignore[arg-type]


def persistent_message(
    body: bytes, message_id: str | None, headers: dict[str, Any] | None = None,
    content_type: str = "application/json",
) -> aio_pika.Message:
    return aio_pika.Message(
        body, headers=headers or {}, content_type=content_type, message_id=message_id,
        delivery_mode=DeliveryMode.PERSISTENT, app_id="opspilot",
    )
