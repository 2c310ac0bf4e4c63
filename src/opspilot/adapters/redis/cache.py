"""The Cache port on Redis: GET, SET PX and DEL under a key prefix."""

from __future__ import annotations

import math
from typing import cast

from redis.asyncio import Redis

from opspilot.adapters.redis.errors import unavailable_on_redis_errors


class RedisCache:
    """Bytes with a TTL, shared by every process that uses the same Redis and prefix.

    Every method raises ServiceUnavailable when Redis is unreachable or too slow (the
    client's socket timeouts bound the wait); callers decide whether to carry on without
    the cache.
    """

    def __init__(self, client: Redis, prefix: str) -> None:
        self._client = client
        self._prefix = f"{prefix}cache:"

    def _key(self, key: str) -> str:
        return self._prefix + key

    async def get(self, key: str) -> bytes | None:
        with unavailable_on_redis_errors("cache get"):
            value = await self._client.get(self._key(key))
        return cast(bytes | None, value)  # the client never decodes (connect_redis)

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        """A TTL of zero or less stores nothing and drops any older value, as the in-memory
        cache does (its entry is born expired); Redis refuses `PX 0`."""
        with unavailable_on_redis_errors("cache set"):
            if ttl_seconds <= 0:
                await self._client.delete(self._key(key))
                return
            await self._client.set(self._key(key), value, px=math.ceil(ttl_seconds * 1000))

    async def delete(self, key: str) -> None:
        with unavailable_on_redis_errors("cache delete"):
            await self._client.delete(self._key(key))
