"""Redis driver errors become port errors here, at the adapter's edge."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis import exceptions as rx

from opspilot.domain.errors import ServiceUnavailable

# Errors that say "Redis cannot serve now", not "this call is wrong": unreachable, slow,
# still loading, a read-only replica after a failover, out of memory. Anything else (a
# script bug, a wrong type) is a defect and is left loud.
UNAVAILABLE: tuple[type[Exception], ...] = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.ReadOnlyError,
    rx.OutOfMemoryError,
    rx.TryAgainError,
    rx.ClusterDownError,
)

RETRY_AFTER_SECONDS = 1.0


@contextmanager
def unavailable_on_redis_errors(operation: str) -> Iterator[None]:
    """Raise ServiceUnavailable(service="redis", operation=...) for an outage error."""
    try:
        yield
    except UNAVAILABLE as exc:
        raise ServiceUnavailable(
            f"redis unavailable during {operation}: {type(exc).__name__}: {exc}",
            retry_after=RETRY_AFTER_SECONDS,
            service="redis",
            operation=operation,
        ) from None
