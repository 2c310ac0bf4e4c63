"""One Redis client per process: short timeouts, one quick retry, bounded pool.

Used by the container as a resource: `client = await connect_redis(url)` at start-up,
`await client.aclose()` at shutdown (the client owns its pool and closes it).
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

# The cache and the limiter sit on the request path: a dead or stalled Redis must cost a
# request well under a second or two, never the driver's default 5 s per socket operation.
SOCKET_TIMEOUT = 0.5
CONNECT_TIMEOUT = 0.5
# PING a connection idle this long before reusing it, so a connection broken while idle
# (server restart, NAT or load-balancer timeout) is replaced before a command uses it.
HEALTH_CHECK_INTERVAL = 15
MAX_CONNECTIONS = 64
POOL_WAIT = 0.5


def _retry() -> Retry:
    # One retry, on connection errors only: it hides a connection that died while idle
    # (e.g. after a Redis restart) without doubling the wait on a timeout, and without
    # re-running a rate-limit script whose first run may have counted.
    return Retry(
        ExponentialBackoff(cap=0.05, base=0.01), retries=1, supported_errors=(RedisConnectionError,)
    )


async def connect_redis(
    url: str,
    *,
    socket_timeout: float = SOCKET_TIMEOUT,
    connect_timeout: float = CONNECT_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
    client_name: str = "opspilot",
) -> Redis:
    """A client for `url` (redis://, rediss://, unix://). Connections open lazily, so an
    unreachable Redis does not stop start-up: each call raises until it is back, and the
    adapters turn that into ServiceUnavailable."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=POOL_WAIT,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        socket_keepalive=True,
        health_check_interval=HEALTH_CHECK_INTERVAL,
        retry=_retry(),
        decode_responses=False,
        client_name=client_name,
    )
    return Redis.from_pool(pool)
