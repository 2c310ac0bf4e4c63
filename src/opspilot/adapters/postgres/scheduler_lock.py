"""Tick ownership in PostgreSQL: one row per tick, taken by exactly one scheduler.

`INSERT … ON CONFLICT DO NOTHING RETURNING` is atomic: of any number of schedulers asking
for the same tick key at the same time, or later, or after a restart, exactly one gets the
row back. (An advisory lock alone would only keep two schedulers from holding the tick *at
the same time*; a second one asking a moment later would get it again.) Rows older than
`retention` are pruned now and then by the scheduler that wins a tick.

The lock has its own small asyncpg pool, so the scheduler does not depend on how the
stores' connections are managed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import asyncpg

from opspilot.domain.errors import ServiceUnavailable

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_DDL_LOCK = 0x0A1E27  # advisory key serialising the CREATE TABLE of concurrent first starts
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError,
)


def asyncpg_dsn(url: str) -> str:
    """SQLAlchemy-style URLs (`postgresql+asyncpg://`) → what asyncpg accepts."""
    return re.sub(r"^postgres(ql)?\+\w+://", "postgresql://", url)


class PostgresSchedulerLock:
    """Implements SchedulerLock. Raises ServiceUnavailable when PostgreSQL cannot answer."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        owner: str = "",
        retention: timedelta = timedelta(days=7),
        prune_every: float = 3600.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if schema is not None and not _IDENTIFIER.match(schema):
            raise ValueError(f"schema {schema!r} is not a plain identifier")
        self._dsn = asyncpg_dsn(dsn)
        self._schema = schema
        self._table = f'"{schema}".alert_ticks' if schema else "alert_ticks"
        self._owner = owner[:200]
        self._retention = retention
        self._prune_every = prune_every
        self._monotonic = monotonic
        self._last_prune: float | None = None
        self._pool: Any = None

    async def connect(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=2, command_timeout=10
            )
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _DDL_LOCK)
                if self._schema:
                    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"')
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {self._table} ("
                    " tick_key text PRIMARY KEY,"
                    " taken_at timestamptz NOT NULL DEFAULT now(),"
                    " owner text NOT NULL DEFAULT '')"
                )
        except DRIVER_ERRORS as exc:
            await self.close()
            raise ServiceUnavailable(f"scheduler lock store unavailable: {exc!r}") from None

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def acquire_tick(self, tick_key: str) -> bool:
        if self._pool is None:
            raise ServiceUnavailable("scheduler lock is not connected")
        try:
            async with self._pool.acquire() as conn:
                row = await conn.fetchrow(
                    f"INSERT INTO {self._table} (tick_key, owner) VALUES ($1, $2)"
                    " ON CONFLICT (tick_key) DO NOTHING RETURNING tick_key",
                    tick_key, self._owner,
                )
                if row is not None and self._prune_due():
                    await conn.execute(
                        f"DELETE FROM {self._table} WHERE taken_at < now() - $1::interval",
                        self._retention,
                    )
        except DRIVER_ERRORS as exc:
            raise ServiceUnavailable(f"scheduler lock store unavailable: {exc!r}") from None
        return row is not None

    def _prune_due(self) -> bool:
        now = self._monotonic()
        if self._last_prune is not None and now - self._last_prune < self._prune_every:
            return False
        self._last_prune = now
        return True
