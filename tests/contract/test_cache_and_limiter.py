"""The Cache and RateLimiter contracts: the in-memory adapters and Redis pass the same tests.

Each fixture yields a factory `make(namespace)`: the same namespace gives adapters that share
their entries (two API processes on one Redis and prefix), different namespaces give
adapters that never see each other's keys. In memory a namespace is one instance.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import pytest

from opspilot.adapters.memory.cache import InMemoryCache, InMemoryRateLimiter
from opspilot.adapters.redis.cache import RedisCache
from opspilot.adapters.redis.limiter import RedisRateLimiter
from opspilot.domain.ports import Cache, RateLimiter
from tests.contract.redis_fixtures import drop_keys, redis_for_test, unique_prefix

BACKENDS = ["memory", "redis"]
TOLERANCE = 0.15  # seconds of slack on time-derived numbers: the test machine is noisy

CacheFactory = Callable[[str], Cache]
LimiterFactory = Callable[[str], RateLimiter]
T = TypeVar("T")


def _memoised(build: Callable[[], T]) -> Callable[[str], T]:
    instances: dict[str, T] = {}
    return lambda namespace: instances.setdefault(namespace, build())


@pytest.fixture(params=BACKENDS)
async def make_cache(request: pytest.FixtureRequest) -> AsyncIterator[CacheFactory]:
    if request.param == "memory":
        yield _memoised(InMemoryCache)
        return
    async with redis_for_test() as client:
        prefix = unique_prefix()
        yield lambda namespace: RedisCache(client, f"{prefix}{namespace}:")
        await drop_keys(client, prefix)


@pytest.fixture(params=BACKENDS)
async def make_limiter(request: pytest.FixtureRequest) -> AsyncIterator[LimiterFactory]:
    if request.param == "memory":
        yield _memoised(InMemoryRateLimiter)
        return
    async with redis_for_test() as client:
        prefix = unique_prefix()
        yield lambda namespace: RedisRateLimiter(client, f"{prefix}{namespace}:")
        await drop_keys(client, prefix)


@pytest.fixture
def cache(make_cache: CacheFactory) -> Cache:
    return make_cache("main")


@pytest.fixture
def limiter(make_limiter: LimiterFactory) -> RateLimiter:
    return make_limiter("main")


# -- cache ---------------------------------------------------------------------------------


async def test_a_missing_key_is_none(cache: Cache) -> None:
    assert await cache.get("absent") is None


async def test_set_then_get_returns_the_same_bytes(cache: Cache) -> None:
    body = bytes(range(256)) * 1024 + '{"name":"naïve ☃"}'.encode()
    await cache.set("k", body, 60)
    assert await cache.get("k") == body


async def test_set_overwrites(cache: Cache) -> None:
    await cache.set("k", b"one", 60)
    await cache.set("k", b"two", 60)
    assert await cache.get("k") == b"two"


async def test_delete_removes_and_deleting_a_missing_key_is_fine(cache: Cache) -> None:
    await cache.set("k", b"v", 60)
    await cache.delete("k")
    await cache.delete("never-set")
    assert await cache.get("k") is None


async def test_an_entry_expires_after_its_ttl(cache: Cache) -> None:
    await cache.set("short", b"v", 0.2)
    await cache.set("long", b"w", 60)
    assert await cache.get("short") == b"v"
    await asyncio.sleep(0.3)
    assert await cache.get("short") is None
    assert await cache.get("long") == b"w"


async def test_a_ttl_of_zero_stores_nothing_and_drops_the_old_value(cache: Cache) -> None:
    await cache.set("k", b"old", 60)
    await cache.set("k", b"new", 0)
    assert await cache.get("k") is None


async def test_get_many_answers_in_order_with_none_for_the_absent(cache: Cache) -> None:
    await cache.set("a", b"1", 60)
    await cache.set("c", b"3", 60)
    assert await cache.get_many(["c", "b", "a", "c"]) == [b"3", None, b"1", b"3"]
    assert await cache.get_many([]) == []


async def test_set_many_sets_every_key_with_the_ttl(cache: Cache) -> None:
    await cache.set("x", b"old", 60)
    await cache.set_many({"x": b"new", "y": b"why"}, 0.2)
    await cache.set_many({}, 60)
    assert await cache.get_many(["x", "y"]) == [b"new", b"why"]
    await asyncio.sleep(0.3)
    assert await cache.get_many(["x", "y"]) == [None, None]


async def test_set_many_with_a_ttl_of_zero_drops_the_keys(cache: Cache) -> None:
    await cache.set("x", b"old", 60)
    await cache.set_many({"x": b"new"}, 0)
    assert await cache.get("x") is None


async def test_namespaces_isolate_keys(make_cache: CacheFactory) -> None:
    a, b = make_cache("a"), make_cache("b")
    await a.set("k", b"from a", 60)
    assert await b.get("k") is None
    await b.set("k", b"from b", 60)
    await b.delete("k")
    assert await a.get("k") == b"from a"


async def test_the_same_namespace_is_shared(make_cache: CacheFactory) -> None:
    await make_cache("shared").set("k", b"v", 60)
    assert await make_cache("shared").get("k") == b"v"


# -- rate limiter --------------------------------------------------------------------------


async def test_a_first_hit_reports_limit_remaining_and_reset(limiter: RateLimiter) -> None:
    decision = await limiter.hit("k", rate_per_second=0.5, burst=5)
    assert (decision.allowed, decision.limit, decision.remaining) == (True, 5, 4)
    assert decision.reset_after == pytest.approx(2.0, abs=TOLERANCE)  # one token at 0.5/s
    assert decision.retry_after == 0.0


async def test_the_burst_is_allowed_then_refused_with_retry_after(limiter: RateLimiter) -> None:
    decisions = [await limiter.hit("k", rate_per_second=1.0, burst=3) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert {d.limit for d in decisions} == {3}
    refused = decisions[-1]
    assert refused.retry_after == pytest.approx(1.0, abs=TOLERANCE)  # 1 / rate
    assert refused.reset_after == pytest.approx(3.0, abs=TOLERANCE)  # burst / rate


async def test_tokens_refill_over_time_up_to_the_burst(limiter: RateLimiter) -> None:
    for _ in range(2):
        assert (await limiter.hit("k", rate_per_second=10.0, burst=2)).allowed
    assert not (await limiter.hit("k", rate_per_second=10.0, burst=2)).allowed
    await asyncio.sleep(0.3)  # three tokens' worth, capped at the burst of two
    decision = await limiter.hit("k", rate_per_second=10.0, burst=2)
    assert (decision.allowed, decision.remaining) == (True, 1)
    assert decision.reset_after == pytest.approx(0.1, abs=0.05)


async def test_a_cost_takes_several_tokens_and_a_refusal_takes_none(limiter: RateLimiter) -> None:
    first = await limiter.hit("k", rate_per_second=0.5, burst=5, cost=3)
    assert (first.allowed, first.remaining) == (True, 2)
    refused = await limiter.hit("k", rate_per_second=0.5, burst=5, cost=3)
    assert (refused.allowed, refused.remaining) == (False, 2)
    assert refused.retry_after == pytest.approx(2.0, abs=TOLERANCE)  # one missing token at 0.5/s
    assert refused.reset_after == pytest.approx(6.0, abs=TOLERANCE)
    last = await limiter.hit("k", rate_per_second=0.5, burst=5, cost=2)
    assert (last.allowed, last.remaining) == (True, 0)


async def test_a_cost_above_the_burst_is_never_allowed(limiter: RateLimiter) -> None:
    decision = await limiter.hit("k", rate_per_second=1.0, burst=2, cost=3)
    assert (decision.allowed, decision.remaining) == (False, 2)
    assert decision.retry_after > 0


async def test_keys_have_independent_buckets(limiter: RateLimiter) -> None:
    assert (await limiter.hit("a", rate_per_second=0.1, burst=1)).allowed
    assert not (await limiter.hit("a", rate_per_second=0.1, burst=1)).allowed
    assert (await limiter.hit("b", rate_per_second=0.1, burst=1)).allowed


async def test_namespaces_isolate_buckets(make_limiter: LimiterFactory) -> None:
    assert (await make_limiter("a").hit("k", rate_per_second=0.1, burst=1)).allowed
    assert (await make_limiter("b").hit("k", rate_per_second=0.1, burst=1)).allowed
    assert not (await make_limiter("a").hit("k", rate_per_second=0.1, burst=1)).allowed


async def test_concurrent_hits_never_overspend_the_bucket(limiter: RateLimiter) -> None:
    decisions = await asyncio.gather(
        *(limiter.hit("k", rate_per_second=0.01, burst=10) for _ in range(30))
    )
    assert sum(d.allowed for d in decisions) == 10
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(10))
