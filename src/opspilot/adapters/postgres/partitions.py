"""Daily range partitions of `metrics` and `log_metadata` on plain PostgreSQL.

Partitions are named `<table>_pYYYYMMDD` and cover one UTC day. `ensure(first, last)` runs
before a write for the batch's time range, creating the missing days that fall inside the
horizon [now - past, now + ahead]; days already known to exist are cached in-process, so
the usual cost is a set lookup. Everything outside the horizon (a clock far off, a replay
of old data) lands in `<table>_default`, so no row is ever rejected, and the horizon keeps a
stray timestamp from creating thousands of partitions. When a day that has rows in the
default partition gets its own partition, those rows move into it in the same transaction
(PostgreSQL refuses the partition otherwise).

DDL takes an advisory lock (one creator at a time across processes) and a lock timeout;
if the lock cannot be had the write goes on and the rows land in the default partition.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from asyncpg import exceptions as pgx

log = logging.getLogger(__name__)
DAY = timedelta(days=1)


def _utc_day(moment: datetime) -> date:
    return date.fromordinal(_EPOCH_ORDINAL + int(moment.timestamp() // 86400))


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


class DailyPartitions:
    def __init__(
        self,
        table: str,
        *,
        now: Callable[[], datetime],
        past: timedelta = timedelta(days=100),
        ahead: timedelta = timedelta(days=3),
        lock_namespace: str = "",
        lock_timeout: str = "10s",
    ) -> None:
        self.table = table
        self._now = now
        self._past = past
        self._ahead = ahead
        self._lock_key = f"opspilot:partitions:{lock_namespace}:{table}"
        self._lock_timeout = lock_timeout
        self._known: set[date] = set()
        self._name = re.compile(rf"^{re.escape(table)}_p(\d{{8}})$")

    def name(self, day: date) -> str:
        return f"{self.table}_p{day:%Y%m%d}"

    def missing_days(self, days: Iterable[date]) -> list[date]:
        """The uncached days among `days` that lie inside the horizon, in order."""
        now = self._now().astimezone(UTC)
        low, high = (now - self._past).date(), (now + self._ahead).date()
        return sorted(d for d in set(days) if low <= d <= high and d not in self._known)

    async def ensure(self, conn: Any, first: datetime, last: datetime) -> list[str]:
        """Create the missing daily partitions for [first, last] (both inclusive) within
        the horizon; returns the created names."""
        now = self._now()
        low = max(first, now - self._past).astimezone(UTC).date()
        high = min(last, now + self._ahead).astimezone(UTC).date()
        return await self.ensure_days(conn, (low + DAY * i for i in range((high - low).days + 1)))

    async def ensure_for(self, conn: Any, moments: Sequence[datetime]) -> list[str]:
        """Create the partitions the rows at `moments` need: the whole range when it is short,
        else only the days that occur (a batch spanning years makes no empty partitions)."""
        if not moments:
            return []
        first, last = min(moments), max(moments)
        if last - first <= 2 * DAY:
            return await self.ensure(conn, first, last)
        return await self.ensure_days(conn, {_utc_day(m) for m in moments})

    async def ensure_days(self, conn: Any, days: Iterable[date]) -> list[str]:
        missing = self.missing_days(days)
        if not missing:
            return []
        try:
            created = await self._create(conn, missing)
        except pgx.LockNotAvailableError:
            log.warning("partitions of %s not created (lock timeout); rows go to the default",
                        self.table)
            return []
        self._known.update(missing)
        return created

    async def _create(self, conn: Any, days: list[date]) -> list[str]:
        created = []
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{self._lock_timeout}'")
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                               self._lock_key)
            for day in days:
                name = self.name(day)
                if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name):
                    continue
                await self._create_one(conn, name, day_start(day), day_start(day + DAY))
                created.append(name)
        if created:
            log.info("created partitions %s", ", ".join(created))
        return created

    async def _create_one(self, conn: Any, name: str, low: datetime, high: datetime) -> None:
        table, default = self.table, f"{self.table}_default"
        bounds = f"FROM ('{low.isoformat()}') TO ('{high.isoformat()}')"
        await conn.execute(
            f'CREATE TEMP TABLE _moving (LIKE "{table}") ON COMMIT DROP;'
        )
        await conn.execute(
            f'WITH moved AS (DELETE FROM "{default}" WHERE "timestamp" >= $1'
            f' AND "timestamp" < $2 RETURNING *) INSERT INTO _moving SELECT * FROM moved',
            low, high,
        )
        await conn.execute(f'CREATE TABLE "{name}" PARTITION OF "{table}" FOR VALUES {bounds}')
        await conn.execute(f'INSERT INTO "{table}" SELECT * FROM _moving')
        await conn.execute("DROP TABLE _moving")

    async def existing(self, conn: Any) -> dict[str, date]:
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = to_regclass($1)",
            self.table,
        )
        found = {}
        for row in rows:
            match = self._name.match(row["relname"])
            if match:
                found[row["relname"]] = datetime.strptime(match.group(1), "%Y%m%d").date()
        return found

    async def drop_older_than(self, conn: Any, cutoff: datetime) -> list[str]:
        """Drop every partition whose whole day is before `cutoff`, and delete the default
        partition's rows before it. Returns the dropped partitions' names."""
        dropped = []
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{self._lock_timeout}'")
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                               self._lock_key)
            for name, day in sorted((await self.existing(conn)).items()):
                if day_start(day + DAY) <= cutoff:
                    await conn.execute(f'DROP TABLE "{name}"')
                    self._known.discard(day)
                    dropped.append(name)
            await conn.execute(
                f'DELETE FROM "{self.table}_default" WHERE "timestamp" < $1', cutoff
            )
        return dropped
