"""QueryCache: TTL by range recency, single flight, outages never fail a query."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from opspilot.adapters.memory.cache import InMemoryCache
from opspilot.adapters.system import FixedClock
from opspilot.application.caching import PAST_TTL, RECENT_TTL, QueryCache, ttl_for
from opspilot.domain.errors import ServiceUnavailable
from opspilot.domain.timewindow import TimeRange

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
PAST = TimeRange(NOW - timedelta(days=2), NOW - timedelta(days=1))
RECENT = TimeRange(NOW - timedelta(hours=1), NOW)


def test_ttl_depends_on_how_recent_the_range_is() -> None:
    assert ttl_for(RECENT, NOW) == RECENT_TTL
    assert ttl_for(PAST, NOW) == PAST_TTL


async def test_concurrent_misses_compute_once() -> None:
    calls = 0

    async def compute() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return b'{"points":[]}'

    cache = QueryCache(InMemoryCache(), FixedClock(NOW))
    answers = await asyncio.gather(*(cache.get_or_compute("series", "k", PAST, compute)
                                     for _ in range(50)))
    assert calls == 1
    assert set(answers) == {b'{"points":[]}'}
    assert await cache.get_or_compute("series", "k", PAST, compute) == b'{"points":[]}'
    assert calls == 1


async def test_a_failed_computation_is_not_cached() -> None:
    cache = QueryCache(InMemoryCache(), FixedClock(NOW))

    async def failing() -> bytes:
        raise ValueError("store down")

    with pytest.raises(ValueError):
        await cache.get_or_compute("series", "k", PAST, failing)

    async def working() -> bytes:
        return b"ok"

    assert await cache.get_or_compute("series", "k", PAST, working) == b"ok"


class DownCache:
    async def get(self, key: str) -> bytes | None:
        raise ServiceUnavailable("redis down")

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        raise ServiceUnavailable("redis down")

    async def delete(self, key: str) -> None:
        raise ServiceUnavailable("redis down")


async def test_cache_outage_still_answers() -> None:
    cache = QueryCache(DownCache(), FixedClock(NOW))

    async def compute() -> bytes:
        return b"fresh"

    assert await cache.get_or_compute("series", "k", RECENT, compute) == b"fresh"
