"""OpsPilot inside another process: the `opspilot.OpsPilot` front door and `opspilot.web_app`.

An entry point like the CLI: it asks the container for everything (the same providers,
selected by the same settings) and runs the same in-process worker as `opspilot serve`, so
what a host ingests reaches the stores by the same queue → worker → store path, acknowledged
only after the write committed. Users import these names from `opspilot`, never from here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import attrs
import pydantic
from aiohttp import web

from opspilot.application.accounts import Credentials
from opspilot.application.alerting import AlertRules, EvaluationReport
from opspilot.container import Container, build_container, start_container, stop_container
from opspilot.domain.analysis import (
    DEFAULT_ANOMALY_THRESHOLD,
    Anomaly,
    AnomalyMethod,
    LogCluster,
)
from opspilot.domain.errors import NotFound
from opspilot.domain.ingest import Accepted, Stream
from opspilot.domain.logs import (
    CountBucket,
    Cursor,
    LogContext,
    LogFilter,
    LogLevel,
    LogPage,
    LogQuery,
    SpikeBucket,
    VolumeQuery,
)
from opspilot.domain.metrics import (
    Aggregation,
    AnomalyQuery,
    Histogram,
    HistogramQuery,
    MetricQuery,
    Series,
    SeriesSelector,
)
from opspilot.domain.ports import Clock
from opspilot.domain.tenancy import IngestIdentity
from opspilot.domain.timewindow import Bucketing, TimeRange
from opspilot.entrypoints.alert_scheduler import run_alerts
from opspilot.entrypoints.api.app import create_app
from opspilot.entrypoints.api.errors import validation_error
from opspilot.entrypoints.api.parsing import window_of
from opspilot.entrypoints.api.schemas import LogsIngestBody, MetricsIngestBody
from opspilot.entrypoints.assembly import api_services
from opspilot.settings import Settings

log = logging.getLogger("opspilot.embedded")

CLOSE_DRAIN_SECONDS = 30.0  # how long closing waits for the worker to write what is queued
_URLS = ("database_url", "opensearch_url", "amqp_url", "redis_url", "ai_url")


@attrs.frozen
class Metric:
    """One metric point to ingest: the fields of an item of `POST /api/ingest/metrics`.

    `timestamp` must carry a time zone; `value` must be finite within ±1e150; `name` is
    1-100 characters `[A-Za-z_][A-Za-z0-9_.:-]*`; at most 32 `tags`."""

    name: str
    value: float
    timestamp: datetime
    service: str | None = None
    tags: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class Log:
    """One log line to ingest: the fields of an item of `POST /api/ingest/logs`.

    `level` is DEBUG, INFO, WARN, ERROR or FATAL (any case; WARNING, ERR, CRITICAL are read
    as aliases); `message` is 1 to 32,768 characters; `context` at most 64 keys and 16 KiB of
    JSON."""

    level: str
    message: str
    timestamp: datetime
    service: str | None = None
    trace_id: str | None = None
    correlation_id: str | None = None
    context: Mapping[str, Any] = attrs.field(factory=dict)


class OpsPilot:
    """OpsPilot built from settings, as an async context manager.

    ```python
    async with OpsPilot.in_memory() as ops:
        project = await ops.create_project("shop")
        await ops.ingest_metrics(project.project_id, [Metric("latency_ms", 12.5, now)])
        await ops.drain()
        series = await ops.query_metrics(project.project_id, "latency_ms")
    ```

    `OpsPilot()` reads the same `OPSPILOT_*` variables as `opspilot serve` (none set: all in
    memory); `OpsPilot(Settings(database_url=...))` or `OpsPilot(database_url=...)` chooses
    explicitly, and `OpsPilot.in_memory()` ignores the environment's URLs. Entering opens every
    connection once (and, with a database, brings its schema up to date unless
    `migrate=False`); leaving drains the in-process worker and closes them.

    `worker=True` (the default) runs the ingestion worker in this process, as `opspilot serve`
    does: required with the in-process queue, optional with RabbitMQ (where `opspilot worker`
    processes can consume instead). `alerts=True` also runs the alert scheduler and retention
    loops (every `Settings.alert_interval_seconds`); without it, `evaluate_rules` evaluates on
    request. `clock` replaces the system clock (tests).

    Every method is scoped to a project id; the ids are those `create_project` returned.
    Failures raise the subclasses of `opspilot.OpsPilotError`: `opspilot.ValidationError`
    (naming the field) for bad input, `opspilot.NotFound` for an unknown project or record,
    `opspilot.ServiceUnavailable` when a backing service cannot answer.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        worker: bool = True,
        alerts: bool = False,
        migrate: bool = True,
        clock: Clock | None = None,
        **overrides: Any,
    ) -> None:
        base = settings if settings is not None else Settings()
        self.settings: Settings = base.model_copy(update=overrides) if overrides else base
        self._run_worker = worker
        self._run_alerts = alerts
        self._migrate = migrate
        self._clock = clock
        self._stack: AsyncExitStack | None = None
        self._container: Container | None = None

    @classmethod
    def in_memory(cls, **options: Any) -> OpsPilot:
        """Everything in memory whatever `OPSPILOT_*_URL` the environment holds (a host's
        tests). `options` are the keyword arguments of `OpsPilot` and any `Settings` field."""
        return cls(Settings(**dict.fromkeys(_URLS)), **options)

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> Self:
        """What entering the context does, for hosts that open and close in hooks
        (`app.on_startup` / `app.on_cleanup`). Call `close` once done."""
        if self._stack is not None:
            raise RuntimeError("this OpsPilot is already started")
        stack = AsyncExitStack()
        try:
            await self._open(stack)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def close(self) -> None:
        """Stop the background loops (the worker writes what it holds first) and close every
        connection. Idempotent."""
        stack, self._stack = self._stack, None
        self._container = None
        if stack is not None:
            await stack.aclose()

    async def _open(self, stack: AsyncExitStack) -> None:
        settings = self.settings
        if settings.database_url and self._migrate:
            from opspilot.adapters.postgres.migrate import migrate

            await migrate(settings.database_url, settings.database_schema)
        container = build_container(settings)
        if self._clock is not None:
            container.clock.override(self._clock)
        await start_container(container, alerting=True)
        stack.push_async_callback(stop_container, container)
        if self._run_worker:
            await self._start_worker(stack, container)
        if self._run_alerts:
            await self._start_alerts(stack, container)
        self._container = container

    async def _start_worker(self, stack: AsyncExitStack, container: Container) -> None:
        worker = container.ingest_worker()
        task = asyncio.create_task(worker.run(), name="opspilot-ingest-worker")

        async def stop() -> None:
            # The in-process queue dies with this object: what it holds is written first
            # (a broker keeps its messages for the next worker instead).
            if container.config.backends()["queue"] == "memory":
                queue = container.memory_queue()
                try:
                    async with asyncio.timeout(CLOSE_DRAIN_SECONDS):
                        await queue.join()
                except TimeoutError:
                    log.warning("closing with %d ingest batches unwritten (stores down?)",
                                sum(queue.waiting(s) for s in Stream))
            worker.request_stop()
            await task

        stack.push_async_callback(stop)

    async def _start_alerts(
        self, stack: AsyncExitStack, container: Container
    ) -> None:
        stopping = asyncio.Event()
        task = asyncio.create_task(
            run_alerts(container.alert_scheduler(), container.clock(), stopping,
                       retention=container.retention()),
            name="opspilot-alert-scheduler",
        )

        async def stop() -> None:
            stopping.set()
            await task

        stack.push_async_callback(stop)

    @property
    def container(self) -> Container:
        if self._container is None:
            raise RuntimeError("OpsPilot is not started: use `async with OpsPilot() as ops`")
        return self._container

    @property
    def backends(self) -> dict[str, str]:
        """Which adapter serves each port, e.g. `{"sql": "memory", "queue": "rabbitmq", ...}`."""
        return dict(self.container.config.backends())

    # -- projects and ingestion ----------------------------------------------------------

    async def create_project(self, name: str, owner_email: str | None = None) -> Credentials:
        """A new project with its first ingest API key and a bearer token of its owner
        (`owner_email`, or `owner@<name>`), for the HTTP API; the library's calls need only
        `Credentials.project_id`. Secrets are returned once. The library acts as the
        operator, as the CLI does on the database."""
        return await self.container.accounts().create_project(name, owner_email)

    async def ingest_metrics(self, project_id: str, metrics: Sequence[Metric]) -> Accepted:
        """Validate and enqueue up to 10,000 points, as `POST /api/ingest/metrics` does (same
        rules, same errors, field names such as `metrics[3].value`). Returns once the queue
        holds the batch; the worker writes it shortly after (`drain` waits for that)."""
        identity = await self._identity(project_id)
        doc = {"metrics": [_metric_doc(m) for m in metrics]}
        try:
            body = MetricsIngestBody.model_validate(doc)
        except pydantic.ValidationError as exc:
            raise validation_error(exc) from None
        return await self.container.ingest().accept_metrics(identity, body.metrics)

    async def ingest_logs(self, project_id: str, logs: Sequence[Log]) -> Accepted:
        """Validate and enqueue up to 10,000 log lines, as `POST /api/ingest/logs` does."""
        identity = await self._identity(project_id)
        doc = {"logs": [_log_doc(x) for x in logs]}
        try:
            body = LogsIngestBody.model_validate(doc)
        except pydantic.ValidationError as exc:
            raise validation_error(exc) from None
        return await self.container.ingest().accept_logs(identity, body.logs)

    async def drain(self, max_seconds: float = 30.0) -> None:
        """Wait until the in-process worker has written everything accepted so far (the
        in-process queue holds nothing, acknowledged or not); TimeoutError after
        `max_seconds`. With RabbitMQ, other processes' workers may hold messages, so this
        raises RuntimeError there: poll the query instead."""
        if self.container.config.backends()["queue"] != "memory" or not self._run_worker:
            raise RuntimeError("drain() needs the in-process queue and worker")
        async with asyncio.timeout(max_seconds):
            await self.container.memory_queue().join()

    # -- metrics -------------------------------------------------------------------------

    async def query_metrics(
        self,
        project_id: str,
        metric_name: str,
        *,
        service: str | None = None,
        tags: Mapping[str, str] | None = None,
        aggregation: Aggregation | str = Aggregation.AVG,
        time_bucket: str = "1m",
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> Series:
        """One bucketed series (`GET /api/metrics/query`): `aggregation` avg, sum, min, max,
        count, p50, p90, p95 or p99 per `time_bucket` (`<n>{s,m,h,d}`) over [start, end),
        by default the hour before now. Buckets without points are absent."""
        selector = SeriesSelector(metric_name, service, dict(tags or {}))
        query = MetricQuery(
            await self._project(project_id), selector, self._window(start, end),
            Aggregation.parse(str(aggregation)), Bucketing.parse(time_bucket),
        )
        (series,) = await self.container.metric_queries().query_series([query])
        return series

    async def histogram(
        self,
        project_id: str,
        metric_name: str,
        *,
        service: str | None = None,
        tags: Mapping[str, str] | None = None,
        bins: int = 20,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> Histogram:
        """The distribution of a metric's raw values in 1-200 equal-width bins."""
        selector = SeriesSelector(metric_name, service, dict(tags or {}))
        query = HistogramQuery(
            await self._project(project_id), selector, self._window(start, end), bins
        )
        return await self.container.metric_queries().histogram_of(query)

    async def anomalies(
        self,
        project_id: str,
        metric_name: str,
        *,
        service: str | None = None,
        tags: Mapping[str, str] | None = None,
        time_bucket: str = "1m",
        threshold: float = DEFAULT_ANOMALY_THRESHOLD,
        method: AnomalyMethod | str = AnomalyMethod.ROBUST,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[Anomaly]:
        """The buckets (averaged per `time_bucket`) whose calibrated anomaly score is at least
        `threshold` (in (0, 1]; the same threshold means the same on any series), by default
        over the 24 hours before now (`GET /api/metrics/anomalies`)."""
        selector = SeriesSelector(metric_name, service, dict(tags or {}))
        query = AnomalyQuery(await self._project(project_id), selector,
                             self._window(start, end, 24), Bucketing.parse(time_bucket),
                             threshold, AnomalyMethod(str(method)))
        return list(await self.container.metric_queries().find_anomalies(query))

    # -- logs ----------------------------------------------------------------------------

    async def search_logs(
        self,
        project_id: str,
        *,
        search: str | None = None,
        levels: Sequence[LogLevel | str] = (),
        service: str | None = None,
        trace_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
        cursor: str | None = None,
    ) -> LogPage:
        """One page of matching logs, newest first (`GET /api/logs/query`). `search` is plain
        text (words, "phrases", -not, prefix*), never query syntax. Past offset 10,000, pass
        the previous page's `next_cursor.encode()` as `cursor`."""
        log_filter = await self._log_filter(project_id, search, levels, service, trace_id,
                                            start, end)
        query = LogQuery(log_filter, limit, offset, Cursor.decode(cursor) if cursor else None)
        return await self.container.log_queries().page(query)

    async def log_context(
        self, project_id: str, log_id: str, *, before: int = 10, after: int = 10
    ) -> LogContext:
        """A log with up to `before` and `after` (0-100) of its neighbours in time."""
        return await self.container.log_queries().surrounding(
            await self._project(project_id), log_id, before, after
        )

    async def log_volume(
        self,
        project_id: str,
        *,
        time_bucket: str = "5m",
        levels: Sequence[LogLevel | str] = (),
        service: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[CountBucket]:
        """How many logs per bucket (`GET /api/logs/volume`)."""
        query = VolumeQuery(
            await self._project(project_id), self._window(start, end),
            Bucketing.parse(time_bucket), _levels(levels), service,
        )
        return await self.container.log_queries().counts(query)

    async def error_spikes(
        self,
        project_id: str,
        *,
        time_bucket: str = "1m",
        service: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[SpikeBucket]:
        """ERROR and FATAL counts per bucket, each scored against the buckets before it."""
        return await self.container.log_queries().spikes(
            await self._project(project_id), self._window(start, end),
            Bucketing.parse(time_bucket), service,
        )

    async def log_patterns(
        self,
        project_id: str,
        *,
        search: str | None = None,
        levels: Sequence[LogLevel | str] = (),
        service: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 1000,
    ) -> list[LogCluster]:
        """The newest `limit` matching logs grouped into message templates, largest first."""
        log_filter = await self._log_filter(project_id, search, levels, service, None,
                                            start, end)
        return await self.container.log_queries().clusters(log_filter, limit)

    # -- alerts --------------------------------------------------------------------------

    @property
    def alerts(self) -> AlertRules:
        """Rules, notification channels and incidents (create, list, update, acknowledge,
        resolve), each call scoped to a project id: see `opspilot.AlertRules`."""
        return self.container.alert_rules()

    async def evaluate_rules(
        self, at: datetime | None = None, project_id: str | None = None
    ) -> EvaluationReport:
        """Evaluate the enabled rules (of one project, or all) once, now or `at`: open
        incidents and notify for rules that fire, resolve those that cleared. For tests and
        scripts; a long-running host passes `alerts=True` instead."""
        store = self.container.rules()
        if project_id is None:
            rules = await store.enabled_rules()
        else:
            rules = [r for r in await store.list_rules(await self._project(project_id))
                     if r.enabled]
        return await self.container.evaluator().evaluate(rules, at or self.container.clock().now())

    # -- helpers -------------------------------------------------------------------------

    async def _project(self, project_id: str) -> str:
        if await self.container.tenancy().get_project(project_id) is None:
            raise NotFound("no such project", {"field": "project_id", "project_id": project_id})
        return project_id

    async def _identity(self, project_id: str) -> IngestIdentity:
        return IngestIdentity(await self._project(project_id), key_id="embedded")

    def _window(
        self, start: datetime | None, end: datetime | None, default_hours: float = 1.0
    ) -> TimeRange:
        return window_of(self.container.clock().now(), start, end, default_hours)

    async def _log_filter(
        self,
        project_id: str,
        search: str | None,
        levels: Sequence[LogLevel | str],
        service: str | None,
        trace_id: str | None,
        start: datetime | None,
        end: datetime | None,
    ) -> LogFilter:
        return LogFilter(
            await self._project(project_id), self._window(start, end), _levels(levels), service,
            search.strip() or None if search else None, trace_id,
        )


def web_app(ops: OpsPilot) -> web.Application:
    """OpsPilot's HTTP API (every route of `opspilot serve`: ingest, queries, rules,
    incidents, `/healthz`, `/metrics`, `/api/openapi.json`) as an aiohttp application to
    mount under a prefix of the host's:

    ```python
    app.add_subapp("/observability", opspilot.web_app(ops))
    ```

    The host's middlewares run first and its own routes stay its own; OpsPilot's error,
    telemetry and body-size handling apply to its routes only (the body limit is
    `Settings.max_body_bytes`, not the host's `client_max_size`). `ops` must be started, and
    stay open while the application serves."""
    return create_app(api_services(ops.container))


def _levels(levels: Sequence[LogLevel | str]) -> tuple[LogLevel, ...]:
    if isinstance(levels, str):  # one level given bare, not as a sequence of letters
        levels = [levels]
    return tuple(dict.fromkeys(LogLevel.parse(str(level)) for level in levels))


def _stamp(moment: Any) -> Any:
    # The ingest schema takes ISO 8601 text only (as JSON carries it); a naive datetime
    # stays zone-less and is refused by name.
    return moment.isoformat() if isinstance(moment, datetime) else moment


def _metric_doc(m: Metric) -> dict[str, Any]:
    return {"name": m.name, "value": m.value, "timestamp": _stamp(m.timestamp),
            "service": m.service, "tags": dict(m.tags)}


def _log_doc(x: Log) -> dict[str, Any]:
    return {"level": x.level, "message": x.message, "timestamp": _stamp(x.timestamp),
            "service": x.service, "trace_id": x.trace_id, "correlation_id": x.correlation_id,
            "context": dict(x.context)}
