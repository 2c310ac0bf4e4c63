"""A real Redis for tests: OPSPILOT_REDIS_URL, one unique key prefix per test.

Without a reachable Redis the test is skipped locally and fails when services are required
(`CI` set, or `OPSPILOT_REQUIRE_SERVICES=1`): a missing service must not turn CI green.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NoReturn

from redis.asyncio import Redis

from opspilot.adapters.redis.connection import connect_redis
from tests.services import services_required, unavailable

_unreachable: dict[str, str | None] = {}  # url -> why it could not be reached, per session


def missing(reason: str) -> NoReturn:
    unavailable("Redis", reason)


def redis_url() -> str:
    url = os.environ.get("OPSPILOT_REDIS_URL")
    if not url:
        missing("OPSPILOT_REDIS_URL is not set")
    return url


async def _wait_for(client: Redis, seconds: float) -> str | None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            await client.ping()
            return None
        except Exception as exc:  # any failure means "not reachable yet"
            if time.monotonic() >= deadline:
                return f"{type(exc).__name__}: {exc}"
        await asyncio.sleep(0.2)


def unique_prefix() -> str:
    return f"opspilot-test:{uuid.uuid4().hex[:12]}:"


async def drop_keys(client: Redis, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
    if keys:
        await client.delete(*keys)


@asynccontextmanager
async def redis_for_test(client_name: str = "opspilot-test") -> AsyncIterator[Redis]:
    """A connected client, or skip/fail. Wait for Redis (up to 30 s where it is required,
    once per session), then close the client afterwards."""
    url = redis_url()
    client = await connect_redis(url, client_name=client_name)
    try:
        if url not in _unreachable:
            _unreachable[url] = await _wait_for(client, 30.0 if services_required() else 1.0)
        if _unreachable[url] is not None:
            missing(f"Redis at {url} is unreachable: {_unreachable[url]}")
        yield client
    finally:
        await client.aclose()
