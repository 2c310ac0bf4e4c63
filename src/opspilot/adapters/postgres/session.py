"""What the PostgreSQL stores need of the database they are built on: a pooled connection,
the idempotent COPY, retention's drop, the partitions and the secret box.

`PostgresDatabase` (database.py) implements it and builds the stores; the stores depend on
this protocol rather than on database.py, so the import graph has no cycle."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

from opspilot.adapters.postgres.partitions import Partitions
from opspilot.domain.ingest import Stream
from opspilot.domain.ports import SecretBox


class Database(Protocol):
    schema: str | None
    timescale: bool
    metric_partitions: Partitions
    secret_box: SecretBox
    now: Callable[[], datetime]

    def connection(self) -> AbstractAsyncContextManager[Any]:
        """A pooled connection; driver failures → TransientStoreError."""
        ...

    async def copy_once(
        self, table: str, columns: Sequence[str], stream: Stream,
        rows_by_message: Mapping[str, list[tuple[Any, ...]]], time_column: int,
        also: Callable[[Any, list[str]], Awaitable[None]] | None = None,
    ) -> int: ...

    async def drop_before(self, table: str, cutoff: datetime) -> list[str]: ...

    async def ping(self) -> None: ...
