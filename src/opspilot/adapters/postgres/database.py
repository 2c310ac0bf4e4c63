"""One asyncpg pool per process, and the stores built on it.

    db = PostgresDatabase(url, schema=None)
    await db.connect()            # opens the pool; creates the partitions due soon
    db.metric_store, db.tenancy_store, ...   # the port implementations
    await db.close()

`connect` does not migrate: run `opspilot migrate` (migrate.py) first. The hot paths (COPY,
the metric reads) and the small CRUD statements all use asyncpg with bound parameters;
SQLAlchemy serves only the schema and Alembic migrations.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from asyncpg import exceptions as pgx

from opspilot.adapters.postgres.errors import CONNECTION_LOST, translated
from opspilot.adapters.postgres.migrate import checked_schema
from opspilot.adapters.postgres.partitions import HOUR, Partitions
from opspilot.adapters.secrets import MissingSecretBox
from opspilot.domain.errors import RecordsRejected, TransientStoreError
from opspilot.domain.ingest import Stream
from opspilot.domain.ports import SecretBox

# Hourly `metrics` partitions are made for points up to HOT_PAST old (the hours not yet
# compacted: the job closes an hour 30 minutes after its end) and HOT_AHEAD ahead.
HOT_PAST = timedelta(hours=2)
HOT_AHEAD = timedelta(hours=6)


def asyncpg_dsn(url: str) -> str:
    """SQLAlchemy-style URLs (`postgresql+asyncpg://`) → what asyncpg accepts."""
    return re.sub(r"^postgres(ql)?\+\w+://", "postgresql://", url)


def _utc_now() -> datetime:
    return datetime.now(UTC)


async def _reset(conn: Any) -> None:
    """On release: roll back a transaction left open, nothing more. asyncpg's default reset
    (UNLISTEN, RESET ALL, advisory unlock: one more round trip per call) is not needed, as
    the stores never LISTEN, take session-level locks or SET outside a transaction."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


@contextlib.contextmanager
def _refusals(table: str) -> Iterator[None]:
    """PostgreSQL refusing the rows themselves (class 22, e.g. NUL in text or jsonb) or
    text asyncpg cannot encode (a lone surrogate): no retry can write them."""
    try:
        yield
    except (pgx.DataError, UnicodeEncodeError) as exc:
        raise RecordsRejected(f"PostgreSQL refused rows for {table}: "
                              f"{type(exc).__name__}: {exc}") from None


class PostgresDatabase:
    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        command_timeout: float = 60.0,
        acquire_timeout: float = 30.0,
        now: Callable[[], datetime] = _utc_now,
        partitions_past: timedelta = timedelta(days=100),
        partitions_ahead: timedelta = timedelta(days=3),
        metric_partition: timedelta = HOUR,
        secret_box: SecretBox | None = None,
    ) -> None:
        self.schema = checked_schema(schema)
        self._dsn = asyncpg_dsn(url)
        self._pool_options = {
            "min_size": min_size, "max_size": max_size, "command_timeout": command_timeout,
        }
        self.now = now
        self._acquire_timeout = acquire_timeout
        self._ahead = partitions_ahead
        self._pool: Any = None
        self.timescale = False
        options: dict[str, Any] = {"now": now, "past": partitions_past,
                                   "ahead": partitions_ahead, "lock_namespace": schema or ""}
        # `metrics`: a partition per compaction period (ADR 0017), made for the hours being
        # written (a point older than HOT_PAST goes to the default partition) a few hours
        # ahead. `metric_partition=DAY` keeps the daily layout of before (benchmarks).
        hourly = {"past": HOT_PAST, "ahead": HOT_AHEAD} if metric_partition == HOUR else {}
        self.metric_partitions = Partitions("metrics", width=metric_partition,
                                            **{**options, **hourly})
        self.log_partitions = Partitions("log_metadata", **options)
        self._stores: dict[str, Any] = {}
        # channel secrets at rest; without a key configured, none can be stored
        self.secret_box: SecretBox = secret_box or MissingSecretBox()

    @property
    def pool(self) -> Any:
        """The asyncpg pool (None while closed): for the pool collector and exporter."""
        return self._pool

    # -- life cycle ---------------------------------------------------------------------

    async def connect(self) -> None:
        # jit off: our reads are many short index scans (an alert chunk is 500 windows in
        # one statement), whose cost estimates pass jit_above_cost once the planner has
        # statistics; compiling then took ~370 ms per statement for ~50 ms of work, making a
        # 10,000-rule tick 27 s instead of 3 s (measured, bench/alert_evaluation.py).
        settings = {"application_name": "opspilot", "timezone": "UTC", "jit": "off"}
        if self.schema:
            settings["search_path"] = f'"{self.schema}", public'
        with translated("connect"):
            self._pool = await asyncpg.create_pool(
                self._dsn, server_settings=settings, reset=_reset, **self._pool_options
            )
        try:
            async with self.connection() as conn:
                await self._detect(conn)
                if not self.timescale:
                    first, last = self.now() - timedelta(days=1), self.now() + self._ahead
                    await self.metric_partitions.ensure(conn, first, last)
                    await self.log_partitions.ensure(conn, first, last)
        except BaseException:
            await self.close()
            raise

    async def _detect(self, conn: Any) -> None:
        kind = await conn.fetchval(
            "SELECT c.relkind::text FROM pg_class c WHERE c.oid = to_regclass('metrics')"
        )
        if kind is None:
            raise RuntimeError(
                f"no `metrics` table in schema {self.schema or '(default)'}: run `opspilot migrate`"
            )
        self.timescale = kind != "p"

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def __aenter__(self) -> PostgresDatabase:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """A pooled connection; driver failures (incl. pool timeouts) → TransientStoreError."""
        if self._pool is None:
            raise TransientStoreError("PostgreSQL pool is not connected (or closed)")
        with translated("acquire"):
            conn = await self._pool.acquire(timeout=self._acquire_timeout)
        try:
            with translated("query"):
                try:
                    yield conn
                except CONNECTION_LOST:
                    conn.terminate()  # never hand a dead or confused connection out again
                    raise
        finally:
            with contextlib.suppress(Exception):
                await self._pool.release(conn)

    async def copy_once(
        self, table: str, columns: Sequence[str], stream: Stream,
        rows_by_message: Mapping[str, list[tuple[Any, ...]]], time_column: int,
        also: Callable[[Any, list[str]], Awaitable[None]] | None = None,
    ) -> int:
        """COPY the rows of every message not seen before, in ONE transaction with their
        message ids in `ingest_inbox`: a redelivered message writes nothing, and of two
        workers racing on one message the second waits on the inbox row, then skips it.
        The daily partitions the rows need (their `time_column`) are created first. `also`
        writes what else the fresh messages carry, in the same transaction."""
        if not rows_by_message:
            return 0
        partitions = {"metrics": self.metric_partitions, "log_metadata": self.log_partitions}
        async with self.connection() as conn:
            if not self.timescale:
                await partitions[table].ensure_for(
                    conn, [r[time_column] for rows in rows_by_message.values() for r in rows])
            with _refusals(table):
                return await self._copy_fresh(conn, table, columns, stream, rows_by_message,
                                              also)

    async def _copy_fresh(
        self, conn: Any, table: str, columns: Sequence[str], stream: Stream,
        rows_by_message: Mapping[str, list[tuple[Any, ...]]],
        also: Callable[[Any, list[str]], Awaitable[None]] | None = None,
    ) -> int:
        async with conn.transaction():
            fresh = await conn.fetch(
                "INSERT INTO ingest_inbox (message_id, stream)"
                " SELECT unnest($1::text[]), $2"
                " ON CONFLICT (message_id) DO NOTHING RETURNING message_id",
                sorted(rows_by_message), stream.value,
            )
            rows = [r for f in fresh for r in rows_by_message[f["message_id"]]]
            if rows:
                await conn.copy_records_to_table(table, records=rows, columns=columns)
            if also is not None and fresh:
                await also(conn, [f["message_id"] for f in fresh])
        return len(rows)

    # -- stores ---------------------------------------------------------------------------

    def _store(self, name: str, factory: Callable[[PostgresDatabase], Any]) -> Any:
        if name not in self._stores:
            self._stores[name] = factory(self)
        return self._stores[name]

    @property
    def metric_store(self) -> Any:
        from opspilot.adapters.postgres.metrics import PostgresMetricStore

        return self._store("metrics", PostgresMetricStore)

    @property
    def log_metadata_store(self) -> Any:
        from opspilot.adapters.postgres.log_metadata import PostgresLogMetadataStore

        return self._store("log_metadata", PostgresLogMetadataStore)

    @property
    def tenancy_store(self) -> Any:
        from opspilot.adapters.postgres.tenancy import PostgresTenancyStore

        return self._store("tenancy", PostgresTenancyStore)

    @property
    def rule_store(self) -> Any:
        from opspilot.adapters.postgres.alerting import PostgresRuleStore

        return self._store("rules", PostgresRuleStore)

    @property
    def channel_store(self) -> Any:
        from opspilot.adapters.postgres.alerting import PostgresChannelStore

        return self._store("channels", PostgresChannelStore)

    @property
    def incident_store(self) -> Any:
        from opspilot.adapters.postgres.alerting import PostgresIncidentStore

        return self._store("incidents", PostgresIncidentStore)

    # -- scheduling and maintenance -----------------------------------------------------

    async def ensure_partitions(self, first: datetime, last: datetime) -> list[str]:
        """Create the daily partitions of both tables for [first, last] (within the horizon)."""
        if self.timescale:
            return []
        async with self.connection() as conn:
            created = await self.metric_partitions.ensure(conn, first, last)
            return created + await self.log_partitions.ensure(conn, first, last)

    async def drop_before(self, table: str, cutoff: datetime) -> list[str]:
        """Retention of one table: drop its whole partitions (chunks, with TimescaleDB)
        before cutoff's day, and its stream's processed-message ids older than `cutoff`
        from the inbox (a redelivery of data we no longer hold cannot matter)."""
        partitions = {"metrics": self.metric_partitions, "log_metadata": self.log_partitions}
        stream = {"metrics": Stream.METRICS, "log_metadata": Stream.LOGS}[table].value
        async with self.connection() as conn:
            await conn.execute(
                "DELETE FROM ingest_inbox WHERE stream = $1 AND processed_at < $2",
                stream, cutoff,
            )
            if self.timescale:
                return await _drop_chunks_before_day(conn, table, cutoff)
            return await partitions[table].drop_older_than(conn, cutoff)

    async def ping(self) -> None:
        async with self.connection() as conn:
            await conn.fetchval("SELECT 1")


async def _drop_chunks_before_day(conn: Any, table: str, cutoff: datetime) -> list[str]:
    """TimescaleDB's form of the partition drop: whole daily chunks before the cutoff's UTC
    day (the contract both paths keep), named like the plain path names its partitions.
    `older_than` is typed: with an untyped parameter `drop_chunks` cannot pick between its
    timestamptz and integer overloads."""
    day = cutoff.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    for attempt in range(DROP_CHUNKS_ATTEMPTS):
        try:
            rows = await conn.fetch(
                "SELECT drop_chunks($1::regclass, older_than => $2::timestamptz)", table, day
            )
            return [row[0] for row in rows]
        except pgx.DeadlockDetectedError:
            if attempt + 1 == DROP_CHUNKS_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


# TimescaleDB's compression policy takes a chunk's lock in the other order from drop_chunks
# (seen: "deadlock detected" between drop_chunks and policy_compression on a chunk both
# wanted); the victim's transaction is rolled back whole, so it is simply asked again.
DROP_CHUNKS_ATTEMPTS = 3
