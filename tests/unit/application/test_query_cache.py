"""QueryCache: TTL by range recency, single flight, outages never fail a query."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from opspilot.adapters.clock_and_ids import FixedClock, UuidGenerator
from opspilot.adapters.memory.cache import InMemoryCache
from opspilot.application.caching import (
    LATE_AFTER,
    PAST_TTL,
    RECENT_TTL,
    DataVersions,
    QueryCache,
    ttl_for,
)
from opspilot.domain.errors import ServiceUnavailable
from opspilot.domain.ingest import MetricBatch
from opspilot.domain.metrics import MetricPoint
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

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        raise ServiceUnavailable("redis down")

    async def set_many(self, values: dict[str, bytes], ttl_seconds: float) -> None:
        raise ServiceUnavailable("redis down")


async def test_cache_outage_still_answers() -> None:
    cache = QueryCache(DownCache(), FixedClock(NOW))

    async def compute() -> bytes:
        return b"fresh"

    assert await cache.get_or_compute("series", "k", RECENT, compute) == b"fresh"


# -- data versions: late points invalidate cached past windows -----------------------------

PROJECT = "p1"


def _batch(*points: tuple[str, datetime]) -> MetricBatch:
    return MetricBatch("m1", PROJECT, NOW,
                       [MetricPoint(PROJECT, ts, name, 1.0) for name, ts in points])


class Counting:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> bytes:
        self.calls += 1
        return f"answer {self.calls}".encode()


def _versioned() -> tuple[QueryCache, DataVersions]:
    store = InMemoryCache()
    versions = DataVersions(store, FixedClock(NOW), UuidGenerator())
    return QueryCache(store, FixedClock(NOW), versions=versions), versions


async def test_a_late_point_makes_the_next_past_query_recompute() -> None:
    cache, versions = _versioned()
    compute = Counting()
    data = (PROJECT, ["cpu"])
    assert await cache.get_or_compute("series", "k", PAST, compute, data) == b"answer 1"
    assert await cache.get_or_compute("series", "k", PAST, compute, data) == b"answer 1"

    assert await versions.note_written([_batch(("cpu", PAST.start))]) == 1

    assert await cache.get_or_compute("series", "k", PAST, compute, data) == b"answer 2"
    assert await cache.get_or_compute("series", "k", PAST, compute, data) == b"answer 2"


async def test_fresh_points_and_other_metrics_leave_the_entry_alone() -> None:
    cache, versions = _versioned()
    compute = Counting()
    data = (PROJECT, ["cpu"])
    await cache.get_or_compute("series", "k", PAST, compute, data)

    fresh = NOW - LATE_AFTER + timedelta(seconds=1)
    assert await versions.note_written([_batch(("cpu", fresh), ("mem", PAST.start))]) == 1

    assert await cache.get_or_compute("series", "k", PAST, compute, data) == b"answer 1"
    assert compute.calls == 1


async def test_an_answer_computed_across_a_late_write_is_not_served_afterwards() -> None:
    """The tokens are read before the store is asked: an answer that may predate the late
    write is stored under the old token, which no later query reads."""
    cache, versions = _versioned()
    data = (PROJECT, ["cpu"])

    async def racing() -> bytes:
        await versions.note_written([_batch(("cpu", PAST.start))])  # commits mid-query
        return b"maybe stale"

    assert await cache.get_or_compute("series", "k", PAST, racing, data) == b"maybe stale"
    assert await cache.get_or_compute("series", "k", PAST, Counting(), data) == b"answer 1"


async def test_unknown_versions_mean_no_caching_but_still_an_answer() -> None:
    versions = DataVersions(DownCache(), FixedClock(NOW), UuidGenerator())  # type: ignore[arg-type]
    cache = QueryCache(InMemoryCache(), FixedClock(NOW), versions=versions)
    compute = Counting()
    data = (PROJECT, ["cpu"])
    assert await cache.get_or_compute("series", "k", PAST, compute, data) == b"answer 1"
    assert await cache.get_or_compute("series", "k", PAST, compute, data) == b"answer 2"
    assert await versions.note_written([_batch(("cpu", PAST.start))]) == 0  # logged, not raised
