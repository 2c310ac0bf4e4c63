"""What sealing the principal cache costs: `Authenticator.principal()` per call, side by side
with the unsealed entry it replaced (cache read + JSON decode, as before ADR 0019) and with
no cache at all (the tenancy store asked every time: in memory, and on the real PostgreSQL
when OPSPILOT_DATABASE_URL is set, in a schema of its own dropped afterwards).

In memory (always) and on the real Redis when OPSPILOT_REDIS_URL is set (a unique key
prefix, removed afterwards). Medians of --rounds rounds of --calls calls each.

    .venv/bin/python bench/principal_cache.py --calls 2000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from opspilot.adapters.clock_and_ids import SystemClock
from opspilot.adapters.memory.cache import InMemoryCache
from opspilot.adapters.memory.tenancy import InMemoryTenancyStore
from opspilot.adapters.secrets import new_secret_key, principal_seal_secret
from opspilot.application.auth import Authenticator, PrincipalSeal
from opspilot.domain.ports import Cache, TenancyStore
from opspilot.domain.tenancy import Principal, Project, Role, Token, User, digest

NOW = datetime.now(UTC)
SECRET = "opt_" + "b" * 43


class UnsealedBaseline:
    """The cached path before ADR 0019: a plain JSON entry trusted as it is."""

    def __init__(self, cache: Cache) -> None:
        self._cache = cache

    async def principal(self, bearer: str) -> Principal:
        entry = await self._cache.get(f"principal:{digest(bearer)}")
        assert entry is not None
        user_id, projects = json.loads(entry)
        return Principal(user_id, {p: Role.MEMBER for p in projects})


class NoCache(InMemoryCache):
    async def get(self, key: str) -> bytes | None:
        return None

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        return None


async def per_call_us(call: Callable[[], Awaitable[object]], calls: int, rounds: int) -> float:
    medians = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            await call()
        medians.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(medians)


async def fill(store: TenancyStore, projects: int) -> None:
    await store.add_user(User("u1", "bench@example.com", NOW))
    await store.add_token(Token("t1", "u1", digest(SECRET), NOW))
    for i in range(projects):
        await store.add_project(Project(f"p{i}", f"project-{i}", NOW))
        await store.add_membership("u1", f"p{i}", Role.MEMBER)


async def measure(name: str, cache: Cache, args: argparse.Namespace,
                  store: TenancyStore | None = None) -> None:
    tenancy: TenancyStore = InMemoryTenancyStore()
    await fill(tenancy, args.projects)
    seal = PrincipalSeal(principal_seal_secret(new_secret_key()))
    sealed = Authenticator(tenancy, cache, SystemClock(), seal)
    await sealed.principal(SECRET)  # fills the cache
    baseline_cache = cache
    await baseline_cache.set(f"principal:{digest(SECRET)}:plain", json.dumps(
        ["u1", [f"p{i}" for i in range(args.projects)]]).encode(), 300)
    plain = UnsealedBaseline(_Suffix(baseline_cache, ":plain"))
    uncached = Authenticator(tenancy, NoCache(), SystemClock(), seal)
    rows = [
        ("sealed entry (HMAC checked)", await per_call_us(
            lambda: sealed.principal(SECRET), args.calls, args.rounds)),
        ("unsealed entry (before)", await per_call_us(
            lambda: plain.principal(SECRET), args.calls, args.rounds)),
        ("no cache, in-memory store", await per_call_us(
            lambda: uncached.principal(SECRET), args.calls, args.rounds)),
    ]
    if store is not None:
        on_pg = Authenticator(store, NoCache(), SystemClock(), seal)
        rows.append(("no cache, PostgreSQL store", await per_call_us(
            lambda: on_pg.principal(SECRET), max(1, args.calls // 10), args.rounds)))
    base = rows[1][1]
    print(f"\n{name}, {args.projects} memberships, median of {args.rounds} x {args.calls} calls")
    for label, micros in rows:
        print(f"  {label:<30} {micros:8.1f} us/call  {micros / base:5.2f}x")


class _Suffix:
    def __init__(self, cache: Cache, suffix: str) -> None:
        self._cache, self._suffix = cache, suffix

    async def get(self, key: str) -> bytes | None:
        return await self._cache.get(key + self._suffix)


async def main(args: argparse.Namespace) -> None:
    database = os.environ.get("OPSPILOT_DATABASE_URL")
    if not database:
        await measure("in-memory cache", InMemoryCache(), args)
    else:
        import asyncpg

        from opspilot.adapters.postgres.database import PostgresDatabase, asyncpg_dsn
        from opspilot.adapters.postgres.migrate import migrate

        schema = f"bench_{uuid.uuid4().hex[:8]}"
        await migrate(database, schema)
        db = PostgresDatabase(database, schema=schema)
        await db.connect()
        try:
            await fill(db.tenancy_store, args.projects)
            await measure("in-memory cache", InMemoryCache(), args, db.tenancy_store)
        finally:
            await db.close()
            conn = await asyncpg.connect(asyncpg_dsn(database))
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            await conn.close()
    url = os.environ.get("OPSPILOT_REDIS_URL")
    if not url:
        print("\n(OPSPILOT_REDIS_URL not set: Redis skipped)")
        return
    from opspilot.adapters.redis.cache import RedisCache
    from opspilot.adapters.redis.connection import connect_redis

    client = await connect_redis(url)
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    try:
        await measure("Redis cache", RedisCache(client, prefix), args)
    finally:
        async for key in client.scan_iter(match=f"{prefix}*"):
            await client.delete(key)
        await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--projects", type=int, default=5)
    asyncio.run(main(parser.parse_args()))
