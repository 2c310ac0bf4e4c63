"""Driver errors → port errors, at the adapter edge.

Transient (may pass on retry): the connection failed or was lost, the server is starting or
shutting down, out of resources, a serialisation failure or deadlock, a lock or statement
timeout. Everything else (a constraint or data error: a bug or bad input) propagates as is,
so the worker dead-letters the message instead of retrying it for ever.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import asyncpg
from asyncpg import exceptions as pgx

from opspilot.domain.errors import TransientStoreError

# The connection itself is gone or its protocol state can no longer be trusted: besides
# being transient, such a connection must not go back to the pool (PostgresDatabase closes
# it). InternalClientError ("cannot switch to state …; another operation is in progress")
# was seen on a pooled connection reused after the server shut down mid-query.
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,  # connection closed / pool closing
    pgx.InternalClientError,
    pgx.PostgresConnectionError,  # class 08
    pgx.OperatorInterventionError,  # class 57 (shutdown, cannot connect now, query canceled)
)
TRANSIENT: tuple[type[BaseException], ...] = (
    *CONNECTION_LOST,
    pgx.InsufficientResourcesError,  # class 53 (too many connections, disk full)
    pgx.TransactionRollbackError,  # class 40 (serialization failure, deadlock)
    pgx.LockNotAvailableError,  # 55P03 (lock_timeout)
)


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Raise TransientStoreError (from None) for failures a retry may cure."""
    try:
        yield
    except TRANSIENT as exc:
        raise TransientStoreError(
            f"PostgreSQL unavailable during {what}: {type(exc).__name__}: {exc}"
        ) from None
