"""The alert engine's scheduling ports, one suite for every adapter:

- SchedulerLock: in memory, and PostgreSQL (needs OPSPILOT_DATABASE_URL);
- EvaluationQueue: in memory, and RabbitMQ (needs OPSPILOT_AMQP_URL).

Real services missing: their cases skip, unless CI or OPSPILOT_REQUIRE_SERVICES=1 (then they
fail). Each case uses its own PostgreSQL schema / queue prefix and removes it afterwards.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from opspilot.adapters.memory.scheduling import InMemoryEvaluationQueue, InMemorySchedulerLock
from opspilot.domain.ports import EvaluationTask, RuleRef
from tests.contract.conftest import database_url_or_skip
from tests.contract.queue_fixtures import (
    amqp_url_or_skip,
    delete_queues,
    unique_prefix,
)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
LockFactory = Callable[[], Awaitable[Any]]


@pytest.fixture(params=["memory", "postgres"])
async def lock_factory(request: pytest.FixtureRequest) -> AsyncIterator[LockFactory]:
    """Makes clients of ONE lock store (as separate replicas would be)."""
    if request.param == "memory":
        shared = InMemorySchedulerLock()

        async def memory() -> Any:
            return shared

        yield memory
        return
    url = await database_url_or_skip()
    import asyncpg

    from opspilot.adapters.postgres.scheduler_lock import PostgresSchedulerLock, asyncpg_dsn

    schema = f"t_{uuid.uuid4().hex[:12]}"
    made: list[PostgresSchedulerLock] = []

    async def postgres() -> Any:
        lock = PostgresSchedulerLock(url, schema=schema, owner=f"replica-{len(made)}")
        await lock.connect()
        made.append(lock)
        return lock

    try:
        yield postgres
    finally:
        for lock in made:
            await lock.close()
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def test_a_tick_is_owned_once(lock_factory: LockFactory) -> None:
    lock = await lock_factory()
    assert await lock.acquire_tick("alerts/60s/2024-03-01T12:00:00+00:00") is True
    assert await lock.acquire_tick("alerts/60s/2024-03-01T12:00:00+00:00") is False
    assert await lock.acquire_tick("alerts/60s/2024-03-01T12:01:00+00:00") is True


async def test_racing_replicas_get_one_winner_per_tick(lock_factory: LockFactory) -> None:
    replicas = [await lock_factory() for _ in range(3)]
    keys = [f"alerts/60s/tick-{n}" for n in range(5)]
    results = await asyncio.gather(*(
        replica.acquire_tick(key) for key in keys for replica in replicas for _ in range(2)
    ))
    per_key = [results[i * 6:(i + 1) * 6] for i in range(len(keys))]
    assert [sum(r) for r in per_key] == [1] * len(keys)


async def test_a_restarted_replica_does_not_take_a_tick_again(lock_factory: LockFactory) -> None:
    first = await lock_factory()
    assert await first.acquire_tick("alerts/60s/restart")
    later = await lock_factory()  # a new client of the same store, as after a restart
    assert await later.acquire_tick("alerts/60s/restart") is False


# -- evaluation queue ----------------------------------------------------------------------


@pytest.fixture(params=["memory", "rabbitmq"])
async def queue_factory(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[], Any]]:
    if request.param == "memory":
        shared = InMemoryEvaluationQueue()

        async def memory() -> Any:
            return shared

        yield memory
        return
    url = await amqp_url_or_skip()
    from opspilot.adapters.rabbitmq.evaluation_queue import RabbitMQEvaluationQueue

    prefix = unique_prefix()
    made: list[RabbitMQEvaluationQueue] = []

    async def rabbitmq() -> Any:
        queue = RabbitMQEvaluationQueue(url, prefix=prefix, prefetch=2)
        await queue.connect()
        made.append(queue)
        return queue

    try:
        yield rabbitmq
    finally:
        for queue in made:
            await queue.close()
        await delete_queues(url, prefix)


def task(n: int, rules: int = 3) -> EvaluationTask:
    refs = tuple(RuleRef(f"project-{n % 2}", f"rule-{n}-{i}") for i in range(rules))
    return EvaluationTask(f"alerts/60s/{T0.isoformat()}", T0, refs, n, 4)


async def _take_all(queue: Any, count: int, wait: float = 5.0) -> list[Any]:
    taken = []
    for _ in range(count):
        delivery = await queue.take(wait)
        assert delivery is not None, f"only {len(taken)} of {count} tasks arrived"
        taken.append(delivery)
    return taken


async def test_tasks_arrive_unchanged(queue_factory: Callable[[], Any]) -> None:
    queue = await queue_factory()
    sent = [task(n) for n in range(4)]
    await queue.publish(sent)
    got = []
    for _ in range(4):  # settling each: an evaluator holds at most `prefetch` unsettled
        (delivery,) = await _take_all(queue, 1)
        got.append(delivery)
        await delivery.ack()
    assert sorted((d.task for d in got), key=lambda t: t.chunk) == sent
    assert all(d.attempt == 1 for d in got)
    assert await queue.take(0.3) is None


async def test_a_retried_task_comes_back_with_its_attempt_counted(
    queue_factory: Callable[[], Any]
) -> None:
    queue = await queue_factory()
    await queue.publish([task(7)])
    (first,) = await _take_all(queue, 1)
    await first.retry()
    (second,) = await _take_all(queue, 1)
    assert second.task == first.task and second.attempt == 2
    await second.ack()
    assert await queue.take(0.3) is None


async def test_competing_evaluators_share_the_tasks(queue_factory: Callable[[], Any]) -> None:
    one, two = await queue_factory(), await queue_factory()
    await one.publish([task(n) for n in range(4)])
    got: list[Any] = []
    for _ in range(40):
        for evaluator in (one, two):
            delivery = await evaluator.take(0.05)
            if delivery is not None:
                got.append(delivery)
                await delivery.ack()
        if len(got) == 4:
            break
    assert sorted(d.task.chunk for d in got) == [0, 1, 2, 3]


async def test_a_task_of_a_dead_evaluator_is_taken_again(
    queue_factory: Callable[[], Any], request: pytest.FixtureRequest
) -> None:
    if request.node.callspec.params["queue_factory"] == "memory":
        pytest.skip("an in-process queue dies with its evaluator")
    dying, survivor = await queue_factory(), await queue_factory()
    await dying.publish([task(1)])
    taken = await dying.take(5.0)
    assert taken is not None
    await dying.close()  # crashed before the ack
    (again,) = await _take_all(survivor, 1, wait=10.0)
    assert again.task == taken.task and again.attempt == 2
    await again.ack()


async def test_an_undecodable_message_is_dead_lettered(
    queue_factory: Callable[[], Any], request: pytest.FixtureRequest
) -> None:
    if request.node.callspec.params["queue_factory"] == "memory":
        pytest.skip("only typed tasks enter the in-process queue")
    queue = await queue_factory()
    from opspilot.adapters.rabbitmq._amqp import confirmed_publish, persistent_message

    channel = await queue._publishing_channel()
    await confirmed_publish(channel, queue.queue_name, persistent_message(b"{nope", "bad"), 5)
    await queue.publish([task(2)])
    delivery = await queue.take(5.0)
    assert delivery is not None and delivery.task == task(2)
    await delivery.ack()
    import aio_pika

    connection = await aio_pika.connect(queue._url)
    try:
        channel = await connection.channel()
        dead = await channel.declare_queue(f"{queue.queue_name}.dlq", passive=True)
        message = None
        for _ in range(50):  # dead-lettering is asynchronous on the broker
            message = await dead.get(timeout=5, fail=False)
            if message is not None:
                break
            await asyncio.sleep(0.1)
        assert message is not None and message.body == b"{nope"
        await message.ack()
    finally:
        await connection.close()
