"""The composition root: settings → adapters → use cases → entry points.

One `Container`, split the way dependency-injector's "multiple containers" example splits
an application (Core / Gateways / Services):

- `Core`: the clock and the id generator;
- `Telemetry`: the Prometheus instruments of each process role (API, worker, alerts);
- `Gateways`: connections and the port adapters on them. Each port is a `providers.Selector`
  over its in-memory adapter and its real one (the queue depth, the tick lock and the
  evaluation queue included); the choice comes from which `OPSPILOT_*_URL` settings are
  present;
- `Services`: the use cases, on the gateways' ports (the alert engine's included).

The top-level `Container` names every product once more (`container.metric_store`,
`container.alert_rules`, ...): the one surface entry points, tests, benches and hosts
(`OpsPilot.container`) ask. They are the sub-containers' own providers, so overriding one
(`container.notifier.override(...)`) changes what every use case built from it gets.

Connections are async `providers.Resource`s of two scopes: a `Connection` is opened for
every process by `start_container`; an `AlertConnection` (the tick lock's and the
evaluation queue's own connections) only by the processes that run the alert engine or
compaction (`start_container(container, alerting=True)`), and a `DeadLetterConnection`
only by `opspilot dlq`. A resource whose URL is not set yields None and costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Protocol

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
from opspilot.adapters.memory.scheduling import InMemoryEvaluationQueue, InMemorySchedulerLock
from opspilot.adapters.memory.tenancy import InMemoryTenancyStore
from opspilot.adapters.notify.dispatch import channel_notifier_resource
from opspilot.adapters.notify.targets import guarded_targets
from opspilot.adapters.prometheus.alerts import AlertTelemetry
from opspilot.adapters.prometheus.api import ApiTelemetry
from opspilot.adapters.prometheus.worker import WorkerTelemetry
from opspilot.adapters.secrets import principal_seal_secret, secret_box
from opspilot.application.accounts import Accounts
from opspilot.application.admission import ByteBudget
from opspilot.application.alerting import (
    AlertRules,
    AlertScheduler,
    NotificationDispatcher,
    RuleEvaluator,
)
from opspilot.application.auth import Authenticator, FailureThrottle, PrincipalSeal
from opspilot.application.caching import DataVersions, QueryCache
from opspilot.application.channel_tests import ChannelTestCap
from opspilot.application.compaction import Compaction, CompactionPolicy
from opspilot.application.ingest import IngestService
from opspilot.application.limits import QueryLimits
from opspilot.application.log_queries import LogQueries
from opspilot.application.metric_queries import MetricQueries
from opspilot.application.promql.queries import PrometheusQueries, PromqlLimits
from opspilot.application.retention import Retention, RetentionPolicy
from opspilot.application.worker import IngestWorker, WorkerSettings
from opspilot.domain.errors import ServiceUnavailable
from opspilot.domain.ports import (
    Analyzer,
    Cache,
    ChannelStore,
    Clock,
    DeadLetterQueue,
    EvaluationQueue,
    IdGenerator,
    IncidentStore,
    IngestConsumer,
    IngestQueue,
    LogMetadataStore,
    LogStore,
    MetricCompaction,
    MetricStore,
    Notifier,
    QueueDepth,
    RateLimiter,
    RuleStore,
    SchedulerLock,
    TenancyStore,
)
from opspilot.settings import Settings

if TYPE_CHECKING:  # the real adapters' modules import their client libraries
    from redis.asyncio import Redis

    from opspilot.adapters.ai.http_client import HttpAnalyzer
    from opspilot.adapters.opensearch.store import OpenSearchLogStore
    from opspilot.adapters.postgres.database import PostgresDatabase
    from opspilot.adapters.postgres.scheduler_lock import PostgresSchedulerLock
    from opspilot.adapters.rabbitmq.dead_letters import RabbitMQDeadLetters
    from opspilot.adapters.rabbitmq.evaluation_queue import RabbitMQEvaluationQueue
    from opspilot.adapters.rabbitmq.queue import RabbitMQQueue

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


# -- resource scopes -------------------------------------------------------------------------


class Connection(providers.Resource):  # type: ignore[type-arg]
    """Opened by every process (`start_container`)."""


class AlertConnection(providers.Resource):  # type: ignore[type-arg]
    """Opened by the processes that own ticks: the alert engine, retention, compaction."""


class DeadLetterConnection(providers.Resource):  # type: ignore[type-arg]
    """Opened by `opspilot dlq` alone."""


# -- connections -----------------------------------------------------------------------------


async def postgres_resource(
    url: str | None, schema: str | None, secret_key: str | None
) -> AsyncIterator[PostgresDatabase | None]:
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
) -> AsyncIterator[OpenSearchLogStore | None]:
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


class _Connectable(Protocol):
    async def connect(self) -> None: ...


async def _connect_with_retries(queue: _Connectable) -> None:
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


async def rabbitmq_resource(
    url: str | None, prefix: str, max_depth: int
) -> AsyncIterator[RabbitMQQueue | None]:
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


async def redis_resource(url: str | None) -> AsyncIterator[Redis | None]:
    if not url:
        yield None
        return
    from opspilot.adapters.redis.connection import connect_redis

    client = await connect_redis(url)
    try:
        yield client
    finally:
        await client.aclose()


async def http_analyzer_resource(url: str | None) -> AsyncIterator[HttpAnalyzer | None]:
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


async def scheduler_lock_resource(
    url: str | None, schema: str | None
) -> AsyncIterator[PostgresSchedulerLock | None]:
    """The tick lock on its own PostgreSQL connection (a lock held across replicas)."""
    if not url:
        yield None
        return
    from opspilot.adapters.postgres.scheduler_lock import PostgresSchedulerLock

    lock = PostgresSchedulerLock(url, schema=schema,
                                 owner=f"{socket.gethostname()}:{os.getpid()}")
    await lock.connect()
    try:
        yield lock
    finally:
        await lock.close()


async def evaluation_queue_resource(
    url: str | None, prefix: str
) -> AsyncIterator[RabbitMQEvaluationQueue | None]:
    if not url:
        yield None
        return
    from opspilot.adapters.rabbitmq.evaluation_queue import RabbitMQEvaluationQueue

    queue = RabbitMQEvaluationQueue(url, prefix=prefix)
    await queue.connect()
    try:
        yield queue
    finally:
        await queue.close()


async def dead_letters_resource(
    url: str | None, prefix: str
) -> AsyncIterator[RabbitMQDeadLetters | None]:
    if not url:
        yield None
        return
    from opspilot.adapters.rabbitmq.dead_letters import RabbitMQDeadLetters

    dead = RabbitMQDeadLetters(url, prefix=prefix)
    await dead.connect()
    try:
        yield dead
    finally:
        await dead.close()


# -- adapters built on a connection ---------------------------------------------------------


def _in_process_analyzer() -> Analyzer:
    from opspilot.adapters.ai.in_process import InProcessAnalyzer

    return InProcessAnalyzer()


def _analyzer_if_installed(analyzer: Callable[[], Analyzer]) -> Analyzer | None:
    """The analyzer, or None when the in-process one's libraries are not installed (anomaly
    rules are then refused and skipped, the rest of the engine works)."""
    try:
        return analyzer()
    except ImportError as exc:
        log.warning("no analyzer (%s): anomaly rules are refused and skipped", exc)
        return None


def _redis_cache(client: Redis, prefix: str) -> Cache:
    from opspilot.adapters.redis.cache import RedisCache

    return RedisCache(client, prefix)


def _redis_limiter(client: Redis, prefix: str) -> RateLimiter:
    from opspilot.adapters.redis.limiter import RedisRateLimiter

    return RedisRateLimiter(client, prefix)


def _rabbitmq_consumer(url: str, prefix: str, prefetch: int) -> IngestConsumer:
    from opspilot.adapters.rabbitmq.consumer import RabbitMQConsumer

    return RabbitMQConsumer(url, prefix=prefix, prefetch=prefetch)


def _compaction_of(store: MetricStore) -> MetricCompaction:
    """Both metric stores implement the compact tier (MetricCompaction) too."""
    return store  # type: ignore[return-value]


def _days(days: float) -> timedelta:
    return timedelta(days=days)


def _seconds(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def _days_in_ms(days: float) -> int:
    return int(days * 86_400_000)


# -- the sub-containers ---------------------------------------------------------------------


class Core(containers.DeclarativeContainer):
    config = providers.Configuration()

    clock: providers.Provider[Clock] = providers.Singleton(SystemClock)
    ids: providers.Provider[IdGenerator] = providers.Singleton(UuidGenerator)


class Telemetry(containers.DeclarativeContainer):
    """Each process role's instruments, each on its own registry (`serve` serves the three
    behind one /metrics)."""

    config = providers.Configuration()

    api = providers.Singleton(ApiTelemetry, per_project=config.metrics_per_project)
    worker = providers.Singleton(WorkerTelemetry)
    alerts = providers.Singleton(AlertTelemetry)


class Gateways(containers.DeclarativeContainer):
    """Connections, and each port's adapter: in memory, or on the connection its URL opens."""

    config = providers.Configuration()

    # -- connections ---------------------------------------------------------------------
    postgres = Connection(
        postgres_resource, config.database_url, config.database_schema, config.secret_key
    )
    opensearch = Connection(
        opensearch_resource, config.opensearch_url, config.index_prefix,
        config.log_index_shards, config.log_index_replicas,
    )
    rabbitmq = Connection(
        rabbitmq_resource, config.amqp_url, config.queue_prefix, config.queue_max_depth
    )
    redis = Connection(redis_resource, config.redis_url)
    http_analyzer = Connection(http_analyzer_resource, config.ai_url)
    notifier: providers.Provider[Notifier] = Connection(
        channel_notifier_resource,
        config.webhook_allowlist,
        config.smtp_host,
        config.smtp_port,
        config.smtp_sender,
        config.public_url,
        config.email_allowed_domains,
    )
    # What a channel may point at, checked at its creation (the notifier checks again).
    channel_targets = providers.Singleton(
        guarded_targets, config.webhook_allowlist, config.email_allowed_domains
    )
    postgres_lock = AlertConnection(
        scheduler_lock_resource, config.database_url, config.database_schema
    )
    rabbitmq_evaluation_queue = AlertConnection(
        evaluation_queue_resource, config.amqp_url, config.queue_prefix
    )
    rabbitmq_dead_letters = DeadLetterConnection(
        dead_letters_resource, config.amqp_url, config.queue_prefix
    )

    # -- ingest queue ----------------------------------------------------------------------
    memory_queue = providers.Singleton(
        InMemoryQueue, max_depth=config.queue_max_depth, prefetch=config.worker_prefetch
    )
    queue: providers.Provider[IngestQueue] = providers.Selector(
        config.backends.queue, memory=memory_queue, rabbitmq=rabbitmq
    )
    # What a worker consumes: the in-process queue itself, or its own RabbitMQ connection
    # (a Factory: each worker owns and closes its consumer).
    ingest_consumer: providers.Provider[IngestConsumer] = providers.Selector(
        config.backends.queue,
        memory=memory_queue,
        rabbitmq=providers.Factory(
            _rabbitmq_consumer, config.amqp_url, config.queue_prefix, config.worker_prefetch
        ),
    )
    dead_letters: providers.Provider[DeadLetterQueue] = providers.Selector(
        config.backends.queue, memory=memory_queue, rabbitmq=rabbitmq_dead_letters
    )
    queue_depth: providers.Provider[QueueDepth] = providers.Selector(
        config.backends.queue, memory=memory_queue, rabbitmq=rabbitmq
    )

    # -- stores ----------------------------------------------------------------------------
    metric_store: providers.Provider[MetricStore] = providers.Selector(
        config.backends.sql,
        memory=providers.Singleton(InMemoryMetricStore),
        postgres=providers.Callable(attrgetter("metric_store"), postgres),
    )
    metric_compaction: providers.Provider[MetricCompaction] = providers.Callable(
        _compaction_of, metric_store
    )
    log_metadata: providers.Provider[LogMetadataStore] = providers.Selector(
        config.backends.sql,
        memory=providers.Singleton(InMemoryLogMetadataStore),
        postgres=providers.Callable(attrgetter("log_metadata_store"), postgres),
    )
    tenancy: providers.Provider[TenancyStore] = providers.Selector(
        config.backends.sql,
        memory=providers.Singleton(InMemoryTenancyStore),
        postgres=providers.Callable(attrgetter("tenancy_store"), postgres),
    )
    rules: providers.Provider[RuleStore] = providers.Selector(
        config.backends.sql,
        memory=providers.Singleton(InMemoryRuleStore),
        postgres=providers.Callable(attrgetter("rule_store"), postgres),
    )
    channels: providers.Provider[ChannelStore] = providers.Selector(
        config.backends.sql,
        memory=providers.Singleton(InMemoryChannelStore),
        postgres=providers.Callable(attrgetter("channel_store"), postgres),
    )
    incidents: providers.Provider[IncidentStore] = providers.Selector(
        config.backends.sql,
        memory=providers.Singleton(InMemoryIncidentStore),
        postgres=providers.Callable(attrgetter("incident_store"), postgres),
    )
    log_store: providers.Provider[LogStore] = providers.Selector(
        config.backends.logs, memory=providers.Singleton(InMemoryLogStore), opensearch=opensearch
    )

    # -- cache, limits, analysis, scheduling -------------------------------------------------
    cache: providers.Provider[Cache] = providers.Selector(
        config.backends.cache,
        memory=providers.Singleton(InMemoryCache),
        redis=providers.Singleton(_redis_cache, redis, config.cache_prefix),
    )
    rate_limiter: providers.Provider[RateLimiter] = providers.Selector(
        config.backends.cache,
        memory=providers.Singleton(InMemoryRateLimiter),
        redis=providers.Singleton(_redis_limiter, redis, config.cache_prefix),
    )
    analyzer: providers.Provider[Analyzer] = providers.Selector(
        config.backends.ai,
        in_process=providers.Singleton(_in_process_analyzer),
        http=http_analyzer,
    )
    scheduler_lock: providers.Provider[SchedulerLock] = providers.Selector(
        config.backends.sql,
        memory=providers.Singleton(InMemorySchedulerLock),
        postgres=postgres_lock,
    )
    evaluation_queue: providers.Provider[EvaluationQueue] = providers.Selector(
        config.backends.queue,
        memory=providers.Singleton(InMemoryEvaluationQueue),
        rabbitmq=rabbitmq_evaluation_queue,
    )


class Services(containers.DeclarativeContainer):
    """The use cases, on the gateways' ports."""

    config = providers.Configuration()
    core = providers.DependenciesContainer()
    gateways = providers.DependenciesContainer()
    telemetry = providers.DependenciesContainer()

    # -- policies and limits -----------------------------------------------------------------
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
        max_range=providers.Callable(_days, config.max_query_range_days),
        max_buckets=config.max_buckets,
    )
    promql_limits = providers.Singleton(
        PromqlLimits,
        max_samples=config.promql_max_samples,
        max_series=config.promql_max_series,
        max_range_ms=providers.Callable(_days_in_ms, config.max_query_range_days),
    )
    worker_settings = providers.Singleton(
        WorkerSettings,
        max_records=config.worker_batch_records,
        flush_interval=config.worker_flush_seconds,
    )

    # -- accounts and admission ------------------------------------------------------------
    data_versions = providers.Singleton(
        DataVersions, gateways.cache, core.clock, core.ids
    )
    query_cache = providers.Singleton(
        QueryCache,
        gateways.cache,
        core.clock,
        on_lookup=telemetry.api.provided.cache_lookup,
        versions=data_versions,
    )
    principal_seal = providers.Singleton(
        PrincipalSeal, providers.Callable(principal_seal_secret, config.secret_key)
    )
    authenticator = providers.Singleton(
        Authenticator, gateways.tenancy, gateways.cache, core.clock, principal_seal,
        config.unknown_credential_seconds,
    )
    accounts = providers.Singleton(Accounts, gateways.tenancy, authenticator, core.clock, core.ids)
    auth_failures = providers.Singleton(
        FailureThrottle, gateways.rate_limiter, core.clock, config.auth_failure_rate,
        config.auth_failure_burst, config.rate_limits_enabled,
    )
    request_budget = providers.Singleton(ByteBudget, config.max_inflight_bytes)
    channel_test_cap = providers.Singleton(
        ChannelTestCap, gateways.rate_limiter, config.channel_tests_per_hour,
        config.project_channel_tests_per_hour,
    )

    # -- ingest and queries ----------------------------------------------------------------
    ingest = providers.Singleton(
        IngestService, gateways.queue, core.clock, core.ids, retention_policy
    )
    # a Factory: each worker owns its consumer (`ingest_worker()` builds one more)
    ingest_worker = providers.Factory(
        IngestWorker,
        gateways.ingest_consumer,
        gateways.metric_store,
        gateways.log_store,
        gateways.log_metadata,
        worker_settings,
        telemetry.worker,
        versions=data_versions,
    )
    metric_queries = providers.Singleton(
        MetricQueries, gateways.metric_store, gateways.analyzer, query_cache, query_limits
    )
    prometheus_queries = providers.Singleton(
        PrometheusQueries, gateways.metric_store, promql_limits
    )
    log_queries = providers.Singleton(
        LogQueries, gateways.log_store, gateways.analyzer, query_limits
    )

    # -- the alert engine, retention and compaction ----------------------------------------
    optional_analyzer = providers.Singleton(_analyzer_if_installed, gateways.analyzer.provider)
    dispatcher = providers.Singleton(
        NotificationDispatcher, gateways.notifier, gateways.channels, gateways.incidents,
        core.clock, observer=telemetry.alerts,
    )
    alert_rules = providers.Singleton(
        AlertRules, gateways.rules, gateways.channels, gateways.incidents, dispatcher,
        core.clock, core.ids, optional_analyzer, gateways.channel_targets, channel_test_cap,
    )
    evaluator = providers.Singleton(
        RuleEvaluator, gateways.metric_store, gateways.rules, gateways.incidents, dispatcher,
        optional_analyzer, observer=telemetry.alerts,
    )
    alert_scheduler = providers.Singleton(
        AlertScheduler, gateways.rules, gateways.scheduler_lock, gateways.evaluation_queue,
        evaluator, core.clock,
        interval=providers.Callable(_seconds, config.alert_interval_seconds),
        observer=telemetry.alerts,
    )
    retention = providers.Singleton(
        Retention, gateways.metric_store, gateways.log_store, gateways.log_metadata,
        gateways.scheduler_lock, retention_policy, observer=telemetry.alerts,
        compaction=gateways.metric_compaction, tenancy=gateways.tenancy,
    )
    compaction = providers.Singleton(
        Compaction, gateways.metric_compaction, gateways.scheduler_lock, compaction_policy,
        telemetry.alerts,
    )


class Container(containers.DeclarativeContainer):
    config = providers.Configuration()

    core = providers.Container(Core, config=config)
    telemetry = providers.Container(Telemetry, config=config)
    gateways = providers.Container(Gateways, config=config)
    services = providers.Container(
        Services, config=config, core=core, gateways=gateways, telemetry=telemetry
    )

    # -- what entry points ask for (the providers above, by name) --------------------------
    clock: providers.Provider[Clock] = core.clock
    ids: providers.Provider[IdGenerator] = core.ids

    api_telemetry: providers.Provider[ApiTelemetry] = telemetry.api
    worker_telemetry: providers.Provider[WorkerTelemetry] = telemetry.worker
    alert_telemetry: providers.Provider[AlertTelemetry] = telemetry.alerts

    postgres: providers.Provider[PostgresDatabase | None] = gateways.postgres
    opensearch: providers.Provider[OpenSearchLogStore | None] = gateways.opensearch
    memory_queue: providers.Provider[InMemoryQueue] = gateways.memory_queue
    queue: providers.Provider[IngestQueue] = gateways.queue
    ingest_consumer: providers.Provider[IngestConsumer] = gateways.ingest_consumer
    dead_letters: providers.Provider[DeadLetterQueue] = gateways.dead_letters
    queue_depth: providers.Provider[QueueDepth] = gateways.queue_depth
    metric_store: providers.Provider[MetricStore] = gateways.metric_store
    metric_compaction: providers.Provider[MetricCompaction] = gateways.metric_compaction
    log_metadata: providers.Provider[LogMetadataStore] = gateways.log_metadata
    tenancy: providers.Provider[TenancyStore] = gateways.tenancy
    rules: providers.Provider[RuleStore] = gateways.rules
    channels: providers.Provider[ChannelStore] = gateways.channels
    incidents: providers.Provider[IncidentStore] = gateways.incidents
    log_store: providers.Provider[LogStore] = gateways.log_store
    cache: providers.Provider[Cache] = gateways.cache
    rate_limiter: providers.Provider[RateLimiter] = gateways.rate_limiter
    analyzer: providers.Provider[Analyzer] = gateways.analyzer
    notifier: providers.Provider[Notifier] = gateways.notifier
    scheduler_lock: providers.Provider[SchedulerLock] = gateways.scheduler_lock
    evaluation_queue: providers.Provider[EvaluationQueue] = gateways.evaluation_queue

    retention_policy: providers.Provider[RetentionPolicy] = services.retention_policy
    compaction_policy: providers.Provider[CompactionPolicy] = services.compaction_policy
    query_limits: providers.Provider[QueryLimits] = services.query_limits
    promql_limits: providers.Provider[PromqlLimits] = services.promql_limits
    worker_settings: providers.Provider[WorkerSettings] = services.worker_settings
    data_versions: providers.Provider[DataVersions] = services.data_versions
    query_cache: providers.Provider[QueryCache] = services.query_cache
    principal_seal: providers.Provider[PrincipalSeal] = services.principal_seal
    authenticator: providers.Provider[Authenticator] = services.authenticator
    accounts: providers.Provider[Accounts] = services.accounts
    provisioner: providers.Provider[Accounts] = services.accounts  # tests and benches say so
    auth_failures: providers.Provider[FailureThrottle] = services.auth_failures
    request_budget: providers.Provider[ByteBudget] = services.request_budget
    ingest: providers.Provider[IngestService] = services.ingest
    ingest_worker: providers.Provider[IngestWorker] = services.ingest_worker
    metric_queries: providers.Provider[MetricQueries] = services.metric_queries
    prometheus_queries: providers.Provider[PrometheusQueries] = services.prometheus_queries
    log_queries: providers.Provider[LogQueries] = services.log_queries
    optional_analyzer: providers.Provider[Analyzer | None] = services.optional_analyzer
    dispatcher: providers.Provider[NotificationDispatcher] = services.dispatcher
    alert_rules: providers.Provider[AlertRules] = services.alert_rules
    channel_test_cap: providers.Provider[ChannelTestCap] = services.channel_test_cap
    evaluator: providers.Provider[RuleEvaluator] = services.evaluator
    alert_scheduler: providers.Provider[AlertScheduler] = services.alert_scheduler
    retention: providers.Provider[Retention] = services.retention
    compaction: providers.Provider[Compaction] = services.compaction


def build_container(settings: Settings | None = None) -> Container:
    settings = settings or Settings()
    container = Container()
    container.config.from_dict({**settings.model_dump(), "backends": backends(settings)})
    return container


async def start_container(
    container: Container, *, alerting: bool = False, dead_letters: bool = False
) -> Container:
    """Open every `Connection` once (and the `AlertConnection`s with `alerting`, the
    `DeadLetterConnection` with `dead_letters`), then pin each opened resource as a plain
    object, so that everything built from it afterwards is built synchronously (an async
    Resource would otherwise hand out awaitables to every provider that depends on it)."""
    for scope in _scopes(alerting, dead_letters):
        await container.init_resources(scope)  # type: ignore[misc]  # async resources
        for provider in _resources(container, scope):
            value = await provider()
            provider.override(providers.Object(value))
            provider.disable_async_mode()
    return container


async def stop_container(container: Container) -> None:
    for scope in reversed(_scopes(True, True)):
        opened = [p for p in _resources(container, scope) if p.overridden]
        for provider in opened:
            provider.reset_override()
            provider.enable_async_mode()
        if opened:
            await container.shutdown_resources(scope)  # type: ignore[misc]


def _scopes(alerting: bool, dead_letters: bool) -> list[type[providers.Resource[Any]]]:
    scopes: list[type[providers.Resource[Any]]] = [Connection]
    if alerting:
        scopes.append(AlertConnection)
    if dead_letters:
        scopes.append(DeadLetterConnection)
    return scopes


def _resources(
    container: Container, scope: type[providers.Resource[Any]]
) -> list[providers.Resource[Any]]:
    found = {id(p): p for p in container.traverse(types=[scope])}
    return [p for p in found.values() if type(p) is scope]
