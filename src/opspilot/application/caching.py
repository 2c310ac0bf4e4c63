"""The metric query cache: TTL by how recent the range is, single flight on a miss, and
data versions so that late data is never hidden behind a cached past window.

A cached answer is the store's answer serialised once: the same bytes are handed to every
caller, so a hit is byte-for-byte what the store gave.

Late data. A window that ended more than RECENT ago is cached for an hour, but points can
still arrive for it (a backlogged worker, a client replaying a buffer). So each (project,
metric) has a version token: the worker replaces it, after its commit, whenever it wrote a
point older than LATE_AFTER, and a past window's cache key includes the current tokens of
its metrics. The tokens are read BEFORE the store is asked, so an answer computed before a
late write can only ever be stored under the old token, which nobody reads again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from opspilot.domain.ingest import MetricBatch
from opspilot.domain.ports import Cache, Clock, IdGenerator
from opspilot.domain.timewindow import TimeRange

log = logging.getLogger(__name__)

RECENT = timedelta(minutes=5)
RECENT_TTL = 10.0  # a range that reaches into the last minutes still changes
PAST_TTL = 3600.0  # a range wholly in the past is settled
# A point older than this, written now, may fall in a window cached as past. One minute
# less than RECENT, so that the API's and the worker's clocks may disagree by a minute.
LATE_AFTER = RECENT - timedelta(minutes=1)
# Outlives every entry cached under the token, so an expired token (read as "none" again)
# cannot bring back an entry cached before the token was first set.
VERSION_TTL = 2 * PAST_TTL


def ttl_for(window: TimeRange, now: datetime) -> float:
    return RECENT_TTL if window.end > now - RECENT else PAST_TTL


def cache_key(namespace: str, project_id: str, normalised: str) -> str:
    digest = hashlib.sha256(normalised.encode()).hexdigest()[:32]
    return f"q:{namespace}:{project_id}:{digest}"


def version_key(project_id: str, metric_name: str) -> str:
    return f"v:{project_id}:{metric_name}"


class DataVersions:
    """Version tokens per (project, metric), replaced when late data is written."""

    def __init__(self, cache: Cache, clock: Clock, ids: IdGenerator) -> None:
        self._cache = cache
        self._clock = clock
        self._ids = ids

    async def note_written(self, batches: Sequence[MetricBatch]) -> int:
        """After a commit: new tokens for the metrics that received late points. Returns how
        many were replaced. A cache outage is logged, not raised: the data is committed,
        and an unreachable cache serves no stale answers while it is down."""
        cutoff = self._clock.now() - LATE_AFTER
        late = {version_key(p.project_id, p.name)
                for batch in batches for p in batch.points if p.timestamp < cutoff}
        if not late:
            return 0
        token = self._ids.new_id().encode()
        try:
            await self._cache.set_many(dict.fromkeys(sorted(late), token), VERSION_TTL)
        except Exception as exc:
            log.warning("could not record late data for %d metrics: %s", len(late), exc)
            return 0
        return len(late)

    async def current(self, project_id: str, metric_names: Sequence[str]) -> str:
        """The tokens of these metrics, as one string ("-" for a metric never written late).
        Raises when the cache is unreachable (the caller then skips the cache)."""
        values = await self._cache.get_many([version_key(project_id, n) for n in metric_names])
        return ",".join(v.decode() if v is not None else "-" for v in values)


class QueryCache:
    def __init__(
        self,
        cache: Cache,
        clock: Clock,
        on_lookup: Callable[[str, bool], None] | None = None,
        versions: DataVersions | None = None,
    ) -> None:
        self._cache = cache
        self._clock = clock
        self._on_lookup = on_lookup or (lambda kind, hit: None)
        self._versions = versions
        self._inflight: dict[str, asyncio.Future[bytes]] = {}

    async def get_or_compute(
        self,
        kind: str,
        key: str,
        window: TimeRange,
        compute: Callable[[], Awaitable[bytes]],
        data: tuple[str, Sequence[str]] | None = None,
    ) -> bytes:
        """`data`: (project, metric names) the answer is computed from; a past window's key
        then carries their version tokens (see the module's docstring)."""
        ttl = ttl_for(window, self._clock.now())
        if ttl == PAST_TTL and data is not None and self._versions is not None:
            try:
                key = f"{key}@{_digest(await self._versions.current(*data))}"
            except Exception:  # versions unknown: this answer must not be cached
                self._on_lookup(kind, False)
                return await compute()
        cached = await self._safe_get(key)
        if cached is not None:
            self._on_lookup(kind, True)
            return cached
        self._on_lookup(kind, False)
        running = self._inflight.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            body = await compute()
            future.set_result(body)
            await self._safe_set(key, body, ttl)
            return body
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._inflight[key]

    async def _safe_get(self, key: str) -> bytes | None:
        try:
            return await self._cache.get(key)
        except Exception:  # a cache outage must never fail a query
            return None

    async def _safe_set(self, key: str, body: bytes, ttl: float) -> None:
        try:
            await self._cache.set(key, body, ttl)
        except Exception:
            return


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
