"""The query cache, the principal cache and the rate limiter on a real Redis.

Skips without OPSPILOT_REDIS_URL (fails in CI / with OPSPILOT_REQUIRE_SERVICES=1). Every test
uses its own key prefix and deletes its keys afterwards. "Two API processes" are two clients
with their own connection pools.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from opspilot.adapters.clock_and_ids import FixedClock, UuidGenerator
from opspilot.adapters.memory.cache import InMemoryRateLimiter
from opspilot.adapters.memory.tenancy import InMemoryTenancyStore
from opspilot.adapters.redis.cache import RedisCache
from opspilot.adapters.redis.connection import connect_redis
from opspilot.adapters.redis.limiter import RedisRateLimiter
from opspilot.adapters.secrets import principal_seal_secret
from opspilot.application.auth import Authenticator, PrincipalSeal
from opspilot.application.caching import (
    PAST_TTL,
    RECENT_TTL,
    VERSION_TTL,
    DataVersions,
    QueryCache,
)
from opspilot.domain.errors import ServiceUnavailable, Unauthenticated
from opspilot.domain.ingest import MetricBatch
from opspilot.domain.metrics import MetricPoint
from opspilot.domain.tenancy import Principal, Project, Role, Token, User, digest
from opspilot.domain.timewindow import TimeRange
from tests.contract.redis_fixtures import drop_keys, redis_for_test, unique_prefix

pytestmark = pytest.mark.integration

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
PAST = TimeRange(NOW - timedelta(days=2), NOW - timedelta(days=1))
RECENT = TimeRange(NOW - timedelta(hours=1), NOW)
FAST_FAILURE = 2.0  # seconds: a dead Redis must never hold a query longer
SERVICES = Path(__file__).resolve().parents[2] / "scripts" / "services"


@pytest.fixture
async def client() -> AsyncIterator[Redis]:
    async with redis_for_test("opspilot-test-a") as redis:
        yield redis


@pytest.fixture
async def other_client() -> AsyncIterator[Redis]:
    """A second client with its own pool: another API process on the same Redis."""
    async with redis_for_test("opspilot-test-b") as redis:
        yield redis


@pytest.fixture
async def prefix(client: Redis) -> AsyncIterator[str]:
    value = unique_prefix()
    yield value
    await drop_keys(client, value)


def counting(body: bytes, delay: float = 0.1) -> tuple[Callable[[], Awaitable[bytes]], list[int]]:
    calls: list[int] = []

    async def compute() -> bytes:
        calls.append(1)
        await asyncio.sleep(delay)
        return body

    return compute, calls


# -- query cache ---------------------------------------------------------------------------


async def test_concurrent_identical_queries_compute_once(client: Redis, prefix: str) -> None:
    queries = QueryCache(RedisCache(client, prefix), FixedClock(NOW))
    compute, calls = counting(b'{"series":[]}')
    answers = await asyncio.gather(
        *(queries.get_or_compute("series", "q1", PAST, compute) for _ in range(50))
    )
    assert len(calls) == 1
    assert set(answers) == {b'{"series":[]}'}
    assert await queries.get_or_compute("series", "q1", PAST, compute) == b'{"series":[]}'
    assert len(calls) == 1


async def test_a_cached_answer_is_byte_identical_to_the_computed_one(
    client: Redis, other_client: Redis, prefix: str
) -> None:
    body = '{"name":"naïve ☃","v":1.0000000000000002}'.encode() + bytes(range(256)) * 64
    compute, calls = counting(body, delay=0)
    computed = await QueryCache(RedisCache(client, prefix), FixedClock(NOW)).get_or_compute(
        "series", "q1", PAST, compute
    )
    # Another process, so the answer can only come from Redis.
    cached = await QueryCache(RedisCache(other_client, prefix), FixedClock(NOW)).get_or_compute(
        "series", "q1", PAST, compute
    )
    assert len(calls) == 1
    assert computed == body
    assert cached == computed
    assert type(cached) is bytes


async def test_a_recent_range_is_cached_briefly_and_a_past_one_long(
    client: Redis, prefix: str
) -> None:
    queries = QueryCache(RedisCache(client, prefix), FixedClock(NOW))
    await queries.get_or_compute("series", "recent", RECENT, counting(b"r", 0)[0])
    await queries.get_or_compute("series", "past", PAST, counting(b"p", 0)[0])
    recent_ms = await client.pttl(f"{prefix}cache:recent")
    past_ms = await client.pttl(f"{prefix}cache:past")
    assert RECENT_TTL * 1000 - 2000 < recent_ms <= RECENT_TTL * 1000
    assert PAST_TTL * 1000 - 2000 < past_ms <= PAST_TTL * 1000


async def test_a_late_write_by_a_worker_process_invalidates_the_api_processes_entry(
    client: Redis, other_client: Redis, prefix: str
) -> None:
    """The worker (its own Redis client) records late data; the API (another client) then
    recomputes the past window instead of serving the hour-long entry."""
    api = QueryCache(RedisCache(client, prefix), FixedClock(NOW),
                     versions=DataVersions(RedisCache(client, prefix), FixedClock(NOW),
                                           UuidGenerator()))
    worker = DataVersions(RedisCache(other_client, prefix), FixedClock(NOW), UuidGenerator())
    data = ("p1", ["cpu", "mem"])
    first, calls = counting(b"before", 0)
    assert await api.get_or_compute("overlay", "k", PAST, first, data) == b"before"
    assert await api.get_or_compute("overlay", "k", PAST, first, data) == b"before"
    assert len(calls) == 1

    late = MetricBatch("m1", "p1", NOW, [MetricPoint("p1", PAST.start, "mem", 1.0)])
    assert await worker.note_written([late]) == 1
    assert PAST_TTL * 1000 < await client.pttl(f"{prefix}cache:v:p1:mem") <= VERSION_TTL * 1000

    second, calls = counting(b"after", 0)
    assert await api.get_or_compute("overlay", "k", PAST, second, data) == b"after"
    assert len(calls) == 1


# -- Redis down, Redis back ----------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def stalled_server() -> AsyncIterator[int]:
    """Accepts connections and never answers: a hung Redis."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(4096):
            pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()


async def _assert_fails_fast(url: str) -> None:
    redis = await connect_redis(url)
    cache, limiter = RedisCache(redis, "down:"), RedisRateLimiter(redis, "down:")
    try:
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: cache.get("k"),
            lambda: cache.set("k", b"v", 10),
            lambda: cache.delete("k"),
            lambda: limiter.hit("k", 1.0, 5),
        ]
        for call in calls:
            started = time.monotonic()
            with pytest.raises(ServiceUnavailable) as raised:
                await call()
            assert time.monotonic() - started < FAST_FAILURE
            assert raised.value.details["service"] == "redis"
        compute, _ = counting(b"fresh", 0)
        started = time.monotonic()
        answer = await QueryCache(cache, FixedClock(NOW)).get_or_compute(
            "series", "k", PAST, compute
        )
        assert answer == b"fresh"
        assert time.monotonic() - started < 2 * FAST_FAILURE  # one failed get, one failed set
    finally:
        await redis.aclose()


async def test_nothing_listening_fails_fast_and_queries_still_answer() -> None:
    await _assert_fails_fast(f"redis://127.0.0.1:{_closed_port()}/0")


async def test_a_hung_redis_fails_fast_and_queries_still_answer(stalled_server: int) -> None:
    await _assert_fails_fast(f"redis://127.0.0.1:{stalled_server}/0")


async def _drop_connections(admin: Redis, client_name: str) -> int:
    """What a restart does to a client: every connection it holds dies."""
    victims = [c["id"] for c in await admin.client_list() if c.get("name") == client_name]
    for client_id in victims:
        await admin.client_kill_filter(_id=client_id)
    return len(victims)


async def test_the_adapters_recover_once_their_connections_were_dropped(
    client: Redis, other_client: Redis, prefix: str
) -> None:
    cache, limiter = RedisCache(client, prefix), RedisRateLimiter(client, prefix)
    await cache.set("k", b"v", 60)
    assert (await limiter.hit("k", 0.1, 5)).remaining == 4
    assert await _drop_connections(other_client, "opspilot-test-a") >= 1
    await other_client.script_flush()  # a restarted server has forgotten every script

    assert await cache.get("k") == b"v"
    assert (await limiter.hit("k", 0.1, 5)).remaining == 3


@pytest.mark.skipif(
    os.environ.get("OPSPILOT_TEST_REDIS_RESTART") != "1",
    reason="restarts the shared Redis: opt in with OPSPILOT_TEST_REDIS_RESTART=1 (scripts/test does)",
)
async def test_the_adapters_recover_after_a_real_redis_restart(
    client: Redis, other_client: Redis, prefix: str
) -> None:
    cache, limiter = RedisCache(client, prefix), RedisRateLimiter(client, prefix)
    await cache.set("k", b"v", 60)
    await limiter.hit("k", 0.1, 5)
    await other_client.shutdown(nosave=True)
    try:
        with pytest.raises(ServiceUnavailable):
            await cache.get("k")
    finally:
        await _start_redis_again(other_client)

    await cache.set("k", b"after", 60)
    assert await cache.get("k") == b"after"
    assert (await limiter.hit("fresh", 0.1, 5)).remaining == 4  # the script is loaded again


async def _start_redis_again(probe: Redis) -> None:
    """Start the shared Redis again: with the configuration scripts/services wrote (quick, and
    no waiting on its lock while another `up` runs), else with `scripts/services up`."""
    conf = SERVICES.parent.parent / ".services" / "redis" / "redis.conf"
    command = ["redis-server", str(conf)] if conf.exists() else ["bash", str(SERVICES), "up"]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        await asyncio.wait_for(process.wait(), 120)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    await asyncio.wait_for(_until_ping(probe), 30)


async def _until_ping(redis: Redis) -> None:
    while True:
        try:
            await redis.ping()
            return
        except Exception:  # still starting
            await asyncio.sleep(0.2)


# -- rate limits across processes ----------------------------------------------------------


async def test_two_api_processes_share_one_bucket(
    client: Redis, other_client: Redis, prefix: str
) -> None:
    a, b = RedisRateLimiter(client, prefix), RedisRateLimiter(other_client, prefix)
    remaining = [(await limiter.hit("ingest:p1", 0.1, 4)).remaining for limiter in (a, b, a, b)]
    assert remaining == [3, 2, 1, 0]
    assert not (await a.hit("ingest:p1", 0.1, 4)).allowed
    assert not (await b.hit("ingest:p1", 0.1, 4)).allowed


async def test_concurrent_hits_from_two_processes_never_overspend(
    client: Redis, other_client: Redis, prefix: str
) -> None:
    a, b = RedisRateLimiter(client, prefix), RedisRateLimiter(other_client, prefix)
    decisions = await asyncio.gather(
        *(limiter.hit("ingest:p1", 0.01, 10) for _ in range(20) for limiter in (a, b))
    )
    assert sum(d.allowed for d in decisions) == 10


async def test_a_bucket_expires_when_it_would_be_full_again(client: Redis, prefix: str) -> None:
    decision = await RedisRateLimiter(client, prefix).hit("k", 0.5, 5, cost=2)
    assert decision.reset_after == pytest.approx(4.0, abs=0.1)
    ttl_ms = await client.pttl(f"{prefix}rate:k")
    assert 3000 < ttl_ms <= 4000


async def test_redis_decides_as_the_in_memory_limiter_does(client: Redis, prefix: str) -> None:
    memory, redis = InMemoryRateLimiter(), RedisRateLimiter(client, prefix)
    steps = [("a", 0.5, 3, 1)] * 4 + [("a", 0.5, 3, 2), ("b", 0.5, 3, 3), ("b", 0.5, 3, 1)]
    steps += [("c", 0.5, 2, 5), ("d", 2.0, 1, 1), ("d", 2.0, 1, 1)]
    for key, rate, burst, cost in steps:
        expected = await memory.hit(key, rate, burst, cost)
        actual = await redis.hit(key, rate, burst, cost)
        assert (actual.allowed, actual.limit, actual.remaining) == (
            expected.allowed,
            expected.limit,
            expected.remaining,
        ), (key, rate, burst, cost)
        assert actual.reset_after == pytest.approx(expected.reset_after, abs=0.1)
        assert actual.retry_after == pytest.approx(expected.retry_after, abs=0.1)


# -- principal cache -----------------------------------------------------------------------


async def test_a_revoked_token_is_refused_at_once_by_every_process(
    client: Redis, other_client: Redis, prefix: str
) -> None:
    tenancy = InMemoryTenancyStore()
    await tenancy.add_user(User("u1", "alice", NOW))
    await tenancy.add_project(Project("p1", "shop", NOW))
    await tenancy.add_membership("u1", "p1")
    secret = "opt_" + "s" * 40
    await tenancy.add_token(Token("t1", "u1", digest(secret), NOW))
    clock = FixedClock(NOW)
    seal = PrincipalSeal(principal_seal_secret("shared-secret-key"))
    api_a = Authenticator(tenancy, RedisCache(client, prefix), clock, seal)
    api_b = Authenticator(tenancy, RedisCache(other_client, prefix), clock, seal)

    assert (await api_a.principal(secret)).project_ids == {"p1"}
    await tenancy.add_membership("u1", "p2")
    assert (await api_b.principal(secret)).project_ids == {"p1"}  # served from the cache
    assert 0 < await client.pttl(f"{prefix}cache:principal:{digest(secret)}") <= 30_000

    await api_a.forget_user("u1")  # what a membership change does
    assert (await api_b.principal(secret)).project_ids == {"p1", "p2"}

    assert await api_a.revoke("t1")
    with pytest.raises(Unauthenticated):
        await api_b.principal(secret)
    with pytest.raises(Unauthenticated):
        await api_a.principal(secret)


async def test_a_principal_written_into_redis_without_the_secret_is_refused(
    client: Redis, prefix: str
) -> None:
    auth = Authenticator(InMemoryTenancyStore(), RedisCache(client, prefix), FixedClock(NOW),
                         PrincipalSeal(principal_seal_secret("the-servers-key")))
    forged_secret = "opt_" + "f" * 40
    key = f"{prefix}cache:principal:{digest(forged_secret)}"
    # As someone with Redis write access would: a well-formed entry sealed with another key.
    other_seal = PrincipalSeal(principal_seal_secret("a-guessed-key"))
    entry = other_seal.seal(digest(forged_secret), Principal("u-evil", {"p-b": Role.OWNER}),
                            NOW + timedelta(minutes=5))
    await client.set(key, entry, px=30_000)
    with pytest.raises(Unauthenticated):
        await auth.principal(forged_secret)
    await client.set(key, b'{"u":"u-evil","r":{"p-b":"owner"}}', px=30_000)
    with pytest.raises(Unauthenticated):
        await auth.principal(forged_secret)
