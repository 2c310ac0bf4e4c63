"""The metric query cache: TTL by how recent the range is, and single flight on a miss.

A cached answer is the store's answer serialised once: the same bytes are handed to every
caller, so a hit is byte-for-byte what the store gave.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from opspilot.domain.ports import Cache, Clock
from opspilot.domain.timewindow import TimeRange

RECENT = timedelta(minutes=5)
RECENT_TTL = 10.0  # a range that reaches into the last minutes still changes
PAST_TTL = 3600.0  # a range wholly in the past is settled


def ttl_for(window: TimeRange, now: datetime) -> float:
    return RECENT_TTL if window.end > now - RECENT else PAST_TTL


def cache_key(namespace: str, project_id: str, normalised: str) -> str:
    digest = hashlib.sha256(normalised.encode()).hexdigest()[:32]
    return f"q:{namespace}:{project_id}:{digest}"


class QueryCache:
    def __init__(
        self,
        cache: Cache,
        clock: Clock,
        on_lookup: Callable[[str, bool], None] | None = None,
    ) -> None:
        self._cache = cache
        self._clock = clock
        self._on_lookup = on_lookup or (lambda kind, hit: None)
        self._inflight: dict[str, asyncio.Future[bytes]] = {}

    async def get_or_compute(
        self, kind: str, key: str, window: TimeRange, compute: Callable[[], Awaitable[bytes]]
    ) -> bytes:
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
            await self._safe_set(key, body, ttl_for(window, self._clock.now()))
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
