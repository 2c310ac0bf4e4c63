"""Each real client reaches its real server: the services scripts/services started."""

from __future__ import annotations

import os
import uuid

import aiohttp

from tests.services import unavailable


def url_of(name: str) -> str:
    url = os.environ.get(f"OPSPILOT_{name}_URL")
    if not url:
        message = f"OPSPILOT_{name}_URL is not set (eval \"$(scripts/services env)\")"
        unavailable(name, message)
    return url


async def test_postgres_round_trip() -> None:
    import asyncpg

    conn = await asyncpg.connect(url_of("DATABASE"))
    try:
        version = await conn.fetchval("select version()")
        assert version.startswith("PostgreSQL 15")
        table = f"smoke_{uuid.uuid4().hex[:8]}"
        await conn.execute(f"create temp table {table} (v int)")
        await conn.copy_records_to_table(table, records=[(1,), (2,)])
        assert await conn.fetchval(f"select sum(v) from {table}") == 3
    finally:
        await conn.close()


async def test_rabbitmq_publish_with_confirm_and_consume() -> None:
    import aio_pika

    connection = await aio_pika.connect(url_of("AMQP"))
    try:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(f"smoke-{uuid.uuid4().hex[:8]}", durable=True)
        body = uuid.uuid4().bytes
        await channel.default_exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=queue.name,
        )  # returns only after the broker's confirm
        message = await queue.get(timeout=5)
        assert message is not None and message.body == body
        await message.ack()
        await queue.delete()
    finally:
        await connection.close()


async def test_redis_round_trip() -> None:
    import redis.asyncio as redis

    client = redis.from_url(url_of("REDIS"))
    try:
        key = f"smoke:{uuid.uuid4().hex}"
        await client.set(key, b"v", px=5000)
        assert await client.get(key) == b"v"
        assert 0 < await client.pttl(key) <= 5000
        await client.delete(key)
    finally:
        await client.aclose()


async def test_opensearch_index_and_search() -> None:
    from opensearchpy import AsyncOpenSearch

    client = AsyncOpenSearch(hosts=[url_of("OPENSEARCH")])
    index = f"smoke-{uuid.uuid4().hex[:8]}"
    try:
        await client.index(index=index, id="1", body={"message": "smoke signal"}, refresh=True)
        found = await client.search(index=index, body={"query": {"match": {"message": "signal"}}})
        assert found["hits"]["total"]["value"] == 1
    finally:
        await client.indices.delete(index=index, ignore_unavailable=True)
        await client.close()


async def test_prometheus_is_ready() -> None:
    async with aiohttp.ClientSession() as session, session.get(
        url_of("PROMETHEUS") + "/-/ready", timeout=aiohttp.ClientTimeout(total=5)
    ) as response:
        assert response.status == 200
