"""The Cache port on Redis: GET, SET PX and DEL under a key prefix."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        with unavailable_on_redis_errors("cache get"):
            values = await self._client.mget([self._key(k) for k in keys])
        return cast(list[bytes | None], values)

    async def set_many(self, values: Mapping[str, bytes], ttl_seconds: float) -> None:
        """One pipelined round trip of SET PX (no MULTI: each key stands alone)."""
        if not values:
            return
        with unavailable_on_redis_errors("cache set"):
            async with self._client.pipeline(transaction=False) as pipe:
                for key, value in values.items():
                    if ttl_seconds <= 0:
                        pipe.delete(self._key(key))
                    else:
                        pipe.set(self._key(key), value, px=math.ceil(ttl_seconds * 1000))
                await pipe.execute()

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
