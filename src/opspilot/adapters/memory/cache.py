"""In-memory cache with TTLs and an in-memory token-bucket rate limiter."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from opspilot.domain.ports import RateDecision


class InMemoryCache:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._entries: dict[str, tuple[float, bytes]] = {}
        self._monotonic = monotonic

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self._monotonic():
            del self._entries[key]
            return None
        return value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [await self.get(key) for key in keys]

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        if len(self._entries) > 10_000:
            self._evict_expired()
        self._entries[key] = (self._monotonic() + ttl_seconds, value)

    async def set_many(self, values: Mapping[str, bytes], ttl_seconds: float) -> None:
        for key, value in values.items():
            await self.set(key, value, ttl_seconds)

    async def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    def _evict_expired(self) -> None:
        now = self._monotonic()
        for key in [k for k, (exp, _) in self._entries.items() if exp <= now]:
            del self._entries[key]


class InMemoryRateLimiter:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, updated)
        self._monotonic = monotonic

    async def hit(
        self, key: str, rate_per_second: float, burst: int, cost: int = 1
    ) -> RateDecision:
        now = self._monotonic()
        tokens, updated = self._buckets.get(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - updated) * rate_per_second)
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
        self._buckets[key] = (tokens, now)
        retry_after = 0.0 if allowed else (cost - tokens) / rate_per_second
        reset_after = (burst - tokens) / rate_per_second
        return RateDecision(allowed, burst, int(tokens), reset_after, retry_after)
