"""The RateLimiter port on Redis: one token bucket per key, updated atomically in Lua.

The bucket's arithmetic is the in-memory limiter's, line for line, so both give the same
decision for the same sequence of hits. Time comes from the Redis server (`TIME`), so every
API process sharing the Redis shares one clock and one bucket.
"""

from __future__ import annotations

from redis.asyncio import Redis

from opspilot.adapters.redis.errors import unavailable_on_redis_errors
from opspilot.domain.ports import RateDecision

# KEYS[1] bucket hash {tokens, ts}; ARGV rate per second, burst, cost.
# Returns {allowed (0|1), tokens left as a string}: a Lua number would come back truncated to
# an integer, and tostring() keeps only 14 significant digits, hence %.17g.
# The hash expires once the bucket would be full again: a missing bucket *is* a full one.
TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local updated = tonumber(state[2])
if tokens == nil or updated == nil then
  tokens = burst
  updated = now
end
local elapsed = math.max(0, now - updated)
tokens = math.min(burst, tokens + elapsed * rate)
local allowed = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((burst - tokens) / rate * 1000)))
return {allowed, string.format('%.17g', tokens)}
"""


class RedisRateLimiter:
    """Token buckets shared by every process using the same Redis and prefix.

    `hit` raises ServiceUnavailable when Redis is unreachable or too slow; the API then
    fails open for that request and counts it (`opspilot_rate_limiter_failures_total`).
    """

    def __init__(self, client: Redis, prefix: str) -> None:
        self._prefix = f"{prefix}rate:"
        # EVALSHA, falling back to SCRIPT LOAD when the server does not know the script
        # (first use, restart, SCRIPT FLUSH).
        self._script = client.register_script(TOKEN_BUCKET)

    async def hit(
        self, key: str, rate_per_second: float, burst: int, cost: int = 1
    ) -> RateDecision:
        with unavailable_on_redis_errors("rate limit"):
            allowed, left = await self._script(
                keys=[self._prefix + key], args=[float(rate_per_second), burst, cost]
            )
        tokens = float(left)
        retry_after = 0.0 if allowed else (cost - tokens) / rate_per_second
        reset_after = (burst - tokens) / rate_per_second
        return RateDecision(bool(allowed), burst, int(tokens), reset_after, retry_after)
