"""Where the browser suite's `opspilot serve` keeps its data.

`embedded` (default): no OPSPILOT_*_URL, everything in memory, as `scripts/serve` runs it.
`services` (OPSPILOT_BROWSER_BACKEND=services; scripts/test runs it after the services are
up): PostgreSQL, OpenSearch, RabbitMQ and Redis from the environment
(`eval "$(scripts/services env)"`), isolated by a schema, index prefix, queue prefix and
key prefix of this run's own, all removed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
import uuid

URLS = ("OPSPILOT_DATABASE_URL", "OPSPILOT_OPENSEARCH_URL", "OPSPILOT_AMQP_URL",
        "OPSPILOT_REDIS_URL")


def backend() -> str:
    return os.environ.get("OPSPILOT_BROWSER_BACKEND", "embedded")


def serve_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSPILOT_")}
    env |= {"OPSPILOT_ALERT_INTERVAL_SECONDS": "2",
            "OPSPILOT_WEBHOOK_ALLOWLIST": "127.0.0.1",  # the suite's own webhook receiver
            "OPSPILOT_ADMIN_TOKEN": "ui-admin-" + secrets.token_urlsafe(24)}
    if backend() != "services":
        return env
    missing = [name for name in URLS if not os.environ.get(name)]
    if missing:
        raise RuntimeError(f"OPSPILOT_BROWSER_BACKEND=services needs {', '.join(missing)}")
    tag = uuid.uuid4().hex[:10]
    env |= {name: os.environ[name] for name in URLS}
    env |= {"OPSPILOT_DATABASE_SCHEMA": f"t_ui_{tag}", "OPSPILOT_INDEX_PREFIX": f"t-ui-{tag}-",
            "OPSPILOT_QUEUE_PREFIX": f"t-ui-{tag}.", "OPSPILOT_CACHE_PREFIX": f"t-ui-{tag}:"}
    return env


def tear_down(env: dict[str, str]) -> None:
    """In a thread of its own: Playwright's sync API may still hold this thread's loop."""
    if "OPSPILOT_DATABASE_SCHEMA" in env:
        worker = threading.Thread(target=asyncio.run, args=(_tear_down(env),))
        worker.start()
        worker.join(timeout=120)


async def _tear_down(env: dict[str, str]) -> None:
    import asyncpg
    import redis.asyncio as redis
    from opensearchpy import AsyncOpenSearch

    from opspilot.adapters.opensearch import mapping
    from opspilot.adapters.postgres.database import asyncpg_dsn
    from tests.contract.queue_fixtures import delete_queues

    schema = env["OPSPILOT_DATABASE_SCHEMA"]
    with contextlib.suppress(Exception):
        conn = await asyncpg.connect(asyncpg_dsn(env["OPSPILOT_DATABASE_URL"]))
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
    prefix = env["OPSPILOT_INDEX_PREFIX"]
    client = AsyncOpenSearch(hosts=[env["OPSPILOT_OPENSEARCH_URL"]], timeout=10)
    try:
        with contextlib.suppress(Exception):
            names = await client.indices.get(index=f"{prefix}*", expand_wildcards="all")
            if names:  # by name: wildcard deletes may be refused (destructive_requires_name)
                await client.indices.delete(index=",".join(names))
        with contextlib.suppress(Exception):
            await client.indices.delete_index_template(name=mapping.alias_name(prefix))
    finally:
        await client.close()
    queues = env["OPSPILOT_QUEUE_PREFIX"]
    with contextlib.suppress(Exception):
        await delete_queues(env["OPSPILOT_AMQP_URL"], queues)
    with contextlib.suppress(Exception):
        await _delete_evaluation_queues(env["OPSPILOT_AMQP_URL"], queues)
    keys = redis.from_url(env["OPSPILOT_REDIS_URL"])
    try:
        async for key in keys.scan_iter(match=f"{env['OPSPILOT_CACHE_PREFIX']}*"):
            await keys.delete(key)
    finally:
        await keys.aclose()


async def _delete_evaluation_queues(url: str, prefix: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(url, timeout=5)
    try:
        for name in (f"{prefix}alerts.evaluate", f"{prefix}alerts.evaluate.dlq"):
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                await channel.queue_delete(name)
            with contextlib.suppress(Exception):
                await channel.close()
    finally:
        await connection.close()
