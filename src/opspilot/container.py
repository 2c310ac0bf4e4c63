"""The composition root: settings → adapters → use cases → entry points.

Each port is a `providers.Selector` over its in-memory adapter and its real one; the choice
comes from which `OPSPILOT_*_URL` settings are present. Connections are async
`providers.Resource`s, opened once by `init_resources()` and closed once by
`shutdown_resources()`; a resource whose URL is not set yields None and costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from dependency_injector import containers, providers

from opspilot.adapters.clock_and_ids import SystemClock, UuidGenerator
from opspilot.adapters.memory.alerting import (
    InMemoryChannelStore,
    InMemoryIncidentStore,
    InMemoryRuleStore,
)
from opspilot.adapters.memory.cache import InMemoryCache, InMemoryRateLimiter
from opspilot.adapters.memory.logs import InMemoryLogMetadataStore, InMemoryLogStore
from opspilot.adapters.memory.metrics import InMemoryMetricStore
from opspilot.adapters.memory.queue import InMemoryQueue
from opspilot.adapters.memory.tenancy import InMemoryTenancyStore
from opspilot.adapters.notify.dispatch import channel_notifier_resource
from opspilot.adapters.secrets import principal_seal_secret, secret_box
from opspilot.adapters.telemetry import ApiTelemetry, WorkerTelemetry
from opspilot.application.accounts import Accounts
from opspilot.application.admission import ByteBudget
from opspilot.application.auth import Authenticator, FailureThrottle, PrincipalSeal
from opspilot.application.caching import DataVersions, QueryCache
from opspilot.application.compaction import CompactionPolicy
from opspilot.application.ingest import IngestService
from opspilot.application.limits import QueryLimits
from opspilot.application.log_queries import LogQueries
from opspilot.application.metric_queries import MetricQueries
from opspilot.application.promql.queries import PrometheusQueries, PromqlLimits
from opspilot.application.retention import RetentionPolicy
from opspilot.application.worker import WorkerSettings
from opspilot.domain.errors import ServiceUnavailable
from opspilot.settings import Settings

log = logging.getLogger("opspilot.container")


def backends(settings: Settings) -> dict[str, str]:
    """Which adapter serves each port, from the URLs that are set."""
    return {
        "sql": "postgres" if settings.database_url else "memory",
        "logs": "opensearch" if settings.opensearch_url else "memory",
        "queue": "rabbitmq" if settings.amqp_url else "memory",
        "cache": "redis" if settings.redis_url else "memory",
        "ai": "http" if settings.ai_url else "in_process",
    }


async def postgres_resource(
    url: str | None, schema: str | None, secret_key: str | None
) -> AsyncIterator[Any]:
    if not url:
        yield None
        return
    from opspilot.adapters.postgres.database import PostgresDatabase

    database = PostgresDatabase(url, schema=schema, secret_box=secret_box(secret_key))
    await database.connect()
    try:
        yield database
    finally:
        await database.close()


async def opensearch_resource(
    url: str | None, prefix: str, shards: int = 1, replicas: int = 0
) -> AsyncIterator[Any]:
    if not url:
        yield None
        return
    from opspilot.adapters.opensearch.store import OpenSearchLogStore, connect_opensearch

    client = await connect_opensearch(url)
    try:
        store = OpenSearchLogStore(client, prefix=prefix, shards=shards, replicas=replicas)
        await store.ensure_template()
        yield store
    finally:
        await client.close()


STARTUP_CONNECT_ATTEMPTS = 3


async def _connect_with_retries(queue: Any) -> None:
    """A broker that is up but slow to finish the AMQP handshake (seen on a loaded machine:
    the 3 s connect timeout passed) should not kill a starting process; one that is really
    absent still fails the start, a couple of seconds later."""
    for attempt in range(1, STARTUP_CONNECT_ATTEMPTS + 1):
        try:
            await queue.connect()
            return
        except ServiceUnavailable:
            if attempt == STARTUP_CONNECT_ATTEMPTS:
                raise
            log.warning("message broker not ready (attempt %d of %d); retrying",
                        attempt, STARTUP_CONNECT_ATTEMPTS)
            await asyncio.sleep(attempt)


async def rabbitmq_resource(url: str | None, prefix: str, max_depth: int) -> AsyncIterator[Any]:
    if not url:
        yield None
        return
    from opspilot.adapters.rabbitmq.queue import RabbitMQQueue

    queue = RabbitMQQueue(url, prefix=prefix, max_depth=max_depth)
    await _connect_with_retries(queue)
    try:
        yield queue
    finally:
        await queue.close()


async def redis_resource(url: str | None) -> AsyncIterator[Any]:
    if not url:
        yield None
        return
    from opspilot.adapters.redis.connection import connect_redis

    client = await connect_redis(url)
    try:
        yield client
    finally:
        await client.aclose()


async def http_analyzer_resource(url: str | None) -> AsyncIterator[Any]:
    if not url:
        yield None
        return
    from opspilot.adapters.ai.http_client import HttpAnalyzer

    analyzer = HttpAnalyzer(url)
    await analyzer.start()
    try:
        yield analyzer
    finally:
        await analyzer.close()


def _in_process_analyzer() -> Any:
    from opspilot.adapters.ai.in_process import InProcessAnalyzer

    return InProcessAnalyzer()


def _redis_cache(client: Any, prefix: str) -> Any:
    from opspilot.adapters.redis.cache import RedisCache

    return RedisCache(client, prefix)


def _redis_limiter(client: Any, prefix: str) -> Any:
    from opspilot.adapters.redis.limiter import RedisRateLimiter

    return RedisRateLimiter(client, prefix)


def _rabbitmq_consumer(url: str, prefix: str, prefetch: int) -> Any:
    from opspilot.adapters.rabbitmq.consumer import RabbitMQConsumer

    return RabbitMQConsumer(url, prefix=prefix, prefetch=prefetch)


class Container(containers.DeclarativeContainer):
    config = providers.Configuration()

    clock = providers.Singleton(SystemClock)
    ids = providers.Singleton(UuidGenerator)
    api_telemetry = providers.Singleton(ApiTelemetry, per_project=config.metrics_per_project)
    worker_telemetry = providers.Singleton(WorkerTelemetry)

    # -- connections -------------------------------------------------------------------
    postgres = providers.Resource(
        postgres_resource, config.database_url, config.database_schema, config.secret_key
    )
    opensearch = providers.Resource(
        opensearch_resource, config.opensearch_url, config.index_prefix,
        config.log_index_shards, config.log_index_replicas,
    )
    rabbitmq = providers.Resource(
        rabbitmq_resource, config.amqp_url, config.queue_prefix, config.queue_max_depth
    )
    redis = providers.Resource(redis_resource, config.redis_url)
    http_analyzer = providers.Resource(http_analyzer_resource, config.ai_url)

    # -- ports -------------------------------------------------------------------------
    memory_queue = providers.Singleton(
        InMemoryQueue, max_depth=config.queue_max_depth, prefetch=config.worker_prefetch
    )
    queue = providers.Selector(
        config.backends.queue, memory=memory_queue, rabbitmq=rabbitmq
    )
    # What a worker consumes: the in-process queue itself, or its own RabbitMQ connection
    # (a Factory: each worker owns and closes its consumer).
    ingest_consumer = providers.Selector(
        config.backends.queue,
        memory=memory_queue,
        rabbitmq=providers.Factory(
            _rabbitmq_consumer, config.amqp_url, config.queue_prefix, config.worker_prefetch
        ),
    )
    metric_store = providers.Selector(
        config.backends.sql,
        memory=providers.Singleton(InMemoryMetricStore),
        postgres=providers.Callable(lambda db: db.metric_store, postgres),
    )
    log_metadata = providers.Selector(
        config.backends.sql,
        memory=providers.Singleton(InMemoryLogMetadataStore),
        postgres=providers.Callable(lambda db: db.log_metadata_store, postgres),
    )
    tenancy = providers.Selector(
        config.backends.sql,
        memory=providers.Singleton(InMemoryTenancyStore),
        postgres=providers.Callable(lambda db: db.tenancy_store, postgres),
    )
    rules = providers.Selector(
        config.backends.sql,
        memory=providers.Singleton(InMemoryRuleStore),
        postgres=providers.Callable(lambda db: db.rule_store, postgres),
    )
    channels = providers.Selector(
        config.backends.sql,
        memory=providers.Singleton(InMemoryChannelStore),
        postgres=providers.Callable(lambda db: db.channel_store, postgres),
    )
    incidents = providers.Selector(
        config.backends.sql,
        memory=providers.Singleton(InMemoryIncidentStore),
        postgres=providers.Callable(lambda db: db.incident_store, postgres),
    )
    log_store = providers.Selector(
        config.backends.logs, memory=providers.Singleton(InMemoryLogStore), opensearch=opensearch
    )
    cache = providers.Selector(
        config.backends.cache,
        memory=providers.Singleton(InMemoryCache),
        redis=providers.Singleton(_redis_cache, redis, config.cache_prefix),
    )
    rate_limiter = providers.Selector(
        config.backends.cache,
        memory=providers.Singleton(InMemoryRateLimiter),
        redis=providers.Singleton(_redis_limiter, redis, config.cache_prefix),
    )
    analyzer = providers.Selector(
        config.backends.ai,
        in_process=providers.Singleton(_in_process_analyzer),
        http=http_analyzer,
    )
    notifier = providers.Resource(
        channel_notifier_resource,
        config.webhook_allowlist,
        config.smtp_host,
        config.smtp_port,
        config.smtp_sender,
        config.public_url,
    )

    # -- use cases ---------------------------------------------------------------------
    # Both metric stores implement MetricCompaction (the compact tier) too.
    metric_compaction = providers.Callable(lambda store: store, metric_store)
    retention_policy = providers.Singleton(
        RetentionPolicy.of_days, config.metric_retention_days, config.log_retention_days,
        config.metric_summary_retention_days,
    )
    compaction_policy = providers.Singleton(
        CompactionPolicy.of_settings, config.metric_compaction_delay_minutes,
        config.metric_compaction_every_seconds, config.metric_compaction_max_periods,
    )
    query_limits = providers.Singleton(
        QueryLimits,
        max_range=providers.Callable(lambda d: timedelta(days=d), config.max_query_range_days),
        max_buckets=config.max_buckets,
    )
    data_versions = providers.Singleton(DataVersions, cache, clock, ids)
    query_cache = providers.Singleton(
        QueryCache,
        cache,
        clock,
        on_lookup=providers.Callable(lambda t: t.cache_lookup, api_telemetry),
        versions=data_versions,
    )
    principal_seal = providers.Singleton(
        PrincipalSeal, providers.Callable(principal_seal_secret, config.secret_key)
    )
    authenticator = providers.Singleton(
        Authenticator, tenancy, cache, clock, principal_seal, config.unknown_credential_seconds
    )
    accounts = providers.Singleton(Accounts, tenancy, authenticator, clock, ids)
    provisioner = accounts  # the name tests and benches create projects through
    auth_failures = providers.Singleton(
        FailureThrottle, rate_limiter, clock, config.auth_failure_rate,
        config.auth_failure_burst, config.rate_limits_enabled,
    )
    request_budget = providers.Singleton(ByteBudget, config.max_inflight_bytes)
    ingest = providers.Singleton(IngestService, queue, clock, ids, retention_policy)
    metric_queries = providers.Singleton(
        MetricQueries, metric_store, analyzer, query_cache, query_limits
    )
    promql_limits = providers.Singleton(
        PromqlLimits,
        max_samples=config.promql_max_samples,
        max_series=config.promql_max_series,
        max_range_ms=providers.Callable(lambda d: d * 86_400_000, config.max_query_range_days),
    )
    prometheus_queries = providers.Singleton(PrometheusQueries, metric_store, promql_limits)
    log_queries = providers.Singleton(LogQueries, log_store, analyzer, query_limits)
    worker_settings = providers.Singleton(
        WorkerSettings,
        max_records=config.worker_batch_records,
        flush_interval=config.worker_flush_seconds,
    )


def build_container(settings: Settings | None = None) -> Container:
    settings = settings or Settings()
    container = Container()
    container.config.from_dict({**settings.model_dump(), "backends": backends(settings)})
    return container


RESOURCES = ("postgres", "opensearch", "rabbitmq", "redis", "http_analyzer", "notifier")


async def start_container(container: Container) -> Container:
    """Open every connection once, then pin each opened resource as a plain object, so that
    everything built from it afterwards is built synchronously (an async Resource would
    otherwise hand out awaitables to every provider that depends on it)."""
    await container.init_resources()  # type: ignore[misc]  # async when any resource is
    for name in RESOURCES:
        provider = getattr(container, name)
        value = await provider()
        provider.override(providers.Object(value))
        provider.disable_async_mode()
    return container


async def stop_container(container: Container) -> None:
    for name in RESOURCES:
        provider = getattr(container, name)
        provider.reset_override()
        provider.enable_async_mode()
    await container.shutdown_resources()  # type: ignore[misc]
