"""Range partitions of `metrics` and `log_metadata` on plain PostgreSQL.

`log_metadata` has one partition a UTC day, `<table>_pYYYYMMDD`. `metrics` has one a
compaction period (an hour, `metrics_pYYYYMMDDHH`; ADR 0017): compaction reads a closed
hour's partition in place and TRUNCATEs it, rather than deleting its rows one by one, and
the emptied partitions are dropped once no writer makes new ones for their hour (so only a
few hours of hot partitions ever exist). Daily `metrics` partitions made before that (by
older versions) are still read, compacted by DELETE, truncated and dropped by retention.

`ensure(first, last)` runs before a write for the batch's time range, creating the missing
partitions that fall inside the horizon [now - past, now + ahead]; partitions already known
to exist are cached in-process, so the usual cost is a set lookup. When one is missing, the
whole way to now + ahead is created in the same transaction (one DDL lock for many hours).
Everything outside the horizon (a clock far off, a replay of old data, a point for an hour
compaction already closed) lands in `<table>_default`, so no row is ever rejected, and the
horizon keeps a stray timestamp from creating thousands of partitions. When a range that has
rows in the default partition gets its own partition, those rows move into it in the same
transaction (PostgreSQL refuses the partition otherwise).

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
HOUR = timedelta(hours=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


class Partitions:
    """Partitions of `table`, each `width` (a day, or an hour) long."""

    def __init__(
        self,
        table: str,
        *,
        now: Callable[[], datetime],
        width: timedelta = DAY,
        past: timedelta = timedelta(days=100),
        ahead: timedelta = timedelta(days=3),
        lock_namespace: str = "",
        lock_timeout: str = "10s",
    ) -> None:
        if width not in (DAY, HOUR):
            raise ValueError(f"partitions are a day or an hour long, not {width}")
        self.table = table
        self.width = width
        self._now = now
        self._past = past
        self._ahead = ahead
        self._lock_key = f"opspilot:partitions:{lock_namespace}:{table}"
        self._lock_timeout = lock_timeout
        self._known: set[datetime] = set()  # starts of partitions known to exist
        self._name = re.compile(rf"^{re.escape(table)}_p(\d{{8}})(\d{{2}})?$")

    def floor(self, moment: datetime) -> datetime:
        step = int(self.width.total_seconds())
        return _EPOCH + timedelta(seconds=int(moment.timestamp()) // step * step)

    def name(self, start: datetime) -> str:
        return f"{self.table}_p{start:%Y%m%d%H}" if self.width == HOUR \
            else f"{self.table}_p{start:%Y%m%d}"

    def _horizon(self) -> tuple[datetime, datetime]:
        now = self._now().astimezone(UTC)
        return self.floor(now - self._past), now + self._ahead

    def missing(self, starts: Iterable[datetime]) -> list[datetime]:
        """The uncached partition starts among `starts` that lie inside the horizon."""
        low, high = self._horizon()
        return sorted(s for s in set(starts) if low <= s <= high and s not in self._known)

    def _span(self, first: datetime, last: datetime) -> list[datetime]:
        start, end = self.floor(first), self.floor(last)
        return [start + self.width * i for i in range(int((end - start) / self.width) + 1)]

    async def ensure(self, conn: Any, first: datetime, last: datetime) -> list[str]:
        """Create the missing partitions for [first, last] (both inclusive) within the
        horizon; returns the created names."""
        low, high = self._horizon()
        first, last = max(first, low), min(last, high)
        if first > last:
            return []
        return await self.ensure_starts(conn, self._span(first, last))

    async def ensure_ahead(self, conn: Any) -> list[str]:
        """Create the missing partitions from now to the horizon's end (a job's call: then
        writers rarely find one missing)."""
        now = self._now()
        return await self.ensure(conn, now, now + self._ahead)

    async def ensure_for(self, conn: Any, moments: Sequence[datetime]) -> list[str]:
        """Create the partitions the rows at `moments` need: the whole range when it is short,
        else only the partitions that occur (a batch spanning years makes no empty ones)."""
        if not moments:
            return []
        first, last = min(moments), max(moments)
        if last - first <= 2 * DAY:
            return await self.ensure(conn, first, last)
        return await self.ensure_starts(conn, {self.floor(m) for m in moments})

    async def ensure_starts(self, conn: Any, starts: Iterable[datetime]) -> list[str]:
        missing = self.missing(starts)
        if not missing:
            return []
        if self.width == HOUR:  # one DDL transaction for the hours up to the horizon
            low, high = self._horizon()
            now = self.floor(self._now())
            missing = self.missing([*missing, *self._span(max(now, low), high)])
        try:
            created = await self._create(conn, missing)
        except pgx.LockNotAvailableError:
            log.warning("partitions of %s not created (lock timeout); rows go to the default",
                        self.table)
            return []
        self._known.update(missing)
        return created

    async def _create(self, conn: Any, starts: list[datetime]) -> list[str]:
        created = []
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{self._lock_timeout}'")
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                               self._lock_key)
            taken = list((await self.existing(conn)).values())
            for start in starts:
                end = start + self.width
                if any(low < end and start < high for low, high in taken):
                    continue  # it exists, or an older daily partition covers the hour
                name = self.name(start)
                await self._create_one(conn, name, start, end)
                created.append(name)
        if created:
            log.info("created partitions %s", ", ".join(created))
        return created

    async def _create_one(self, conn: Any, name: str, low: datetime, high: datetime) -> None:
        table, default = self.table, f"{self.table}_default"
        bounds = f"FROM ('{low.isoformat()}') TO ('{high.isoformat()}')"
        if not await conn.fetchval(f'SELECT EXISTS (SELECT 1 FROM "{default}"'
                                   ' WHERE "timestamp" >= $1 AND "timestamp" < $2)', low, high):
            # nothing to move (the usual case: hours made ahead): four statements fewer
            await conn.execute(f'CREATE TABLE "{name}" PARTITION OF "{table}" FOR VALUES {bounds}')
            return
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

    async def existing(self, conn: Any) -> dict[str, tuple[datetime, datetime]]:
        """Every partition named as these are (daily or hourly), with its [start, end)."""
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = to_regclass($1)",
            self.table,
        )
        found = {}
        for row in rows:
            match = self._name.match(row["relname"])
            if match:
                start = datetime.strptime(match.group(1) + (match.group(2) or "00"),
                                          "%Y%m%d%H").replace(tzinfo=UTC)
                found[row["relname"]] = (start, start + (HOUR if match.group(2) else DAY))
        return found

    def forget(self, starts: Iterable[datetime]) -> None:
        self._known.difference_update(starts)

    async def drop_older_than(self, conn: Any, cutoff: datetime) -> list[str]:
        """Drop every partition that ends at or before `cutoff`, and delete the default
        partition's rows before it. Returns the dropped partitions' names (and
        `<table>_default<day>` when default rows went)."""
        dropped = []
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{self._lock_timeout}'")
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                               self._lock_key)
            for name, (start, end) in sorted((await self.existing(conn)).items()):
                if end <= cutoff:
                    await conn.execute(f'DROP TABLE "{name}"')
                    self._known.discard(start)
                    dropped.append(name)
            status = await conn.execute(
                f'DELETE FROM "{self.table}_default" WHERE "timestamp" < $1', cutoff
            )
            if status != "DELETE 0":  # late or far-off rows (hourly: anything not recent)
                dropped.append(f"{self.table}_default<{cutoff.date().isoformat()}")
        return dropped

    async def drop_emptied(self, conn: Any, closed_before: datetime) -> list[str]:
        """Drop the hourly partitions that end at or before `closed_before` and before the
        horizon (no writer creates them again: a late point goes to the default) and hold
        no row. The parent is locked first (DROP needs it anyway; a partition first would
        invert the writers' lock order), briefly: a busy table leaves them to the next
        run. Returns the dropped names."""
        low, _ = self._horizon()
        due = {name: start for name, (start, end) in (await self.existing(conn)).items()
               if end - start == HOUR and end <= min(closed_before, low)}
        if not due:
            return []
        dropped = []
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL lock_timeout = '500ms'")
                await conn.execute(f'LOCK TABLE "{self.table}" IN ACCESS EXCLUSIVE MODE')
                for name in sorted(due):
                    if not await conn.fetchval(f'SELECT EXISTS (SELECT 1 FROM "{name}")'):
                        await conn.execute(f'DROP TABLE "{name}"')
                        dropped.append(name)
        except pgx.LockNotAvailableError:
            return []
        self.forget(due[name] for name in dropped)
        return dropped
