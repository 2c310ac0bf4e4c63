"""The scheduler process: `opspilot alerts [--once]`, and the same loops in `opspilot serve`.

Every replica runs four loops: the ticker (at each interval boundary, try to own the tick;
the owner publishes the enabled rules in chunks), the evaluator (take chunks, evaluate,
ack), retention (each hour, the replica that owns the hour drops the data past its
retention), and metric compaction (every 5 minutes, the owner compacts the closed hours). SIGTERM (the `stop` event) ends them after the chunk in hand is finished.

Telemetry (`AlertTelemetry`, its own Prometheus registry) is served on `/metrics` of a small
side server when a metrics port is given.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import attrs
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from opspilot.adapters.memory.notify import RecordingNotifier
from opspilot.adapters.memory.scheduling import InMemoryEvaluationQueue, InMemorySchedulerLock
from opspilot.application.alerting import (
    AlertObserver,
    AlertRules,
    AlertScheduler,
    EvaluationQueue,
    NotificationDispatcher,
    RuleEvaluator,
)
from opspilot.application.compaction import (
    Compaction,
    CompactionObserver,
    CompactionReport,
)
from opspilot.application.retention import Retention, RetentionObserver
from opspilot.domain.alerts import AlertRule
from opspilot.domain.errors import OpsPilotError
from opspilot.domain.ports import Analyzer, Clock, Notifier, SchedulerLock
from opspilot.domain.timewindow import Bucketing
from opspilot.settings import Settings

log = logging.getLogger("opspilot.alerts")

EVALUATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
DEFAULT_METRICS_PORT = 9102


COMPACTION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class AlertTelemetry(AlertObserver, RetentionObserver, CompactionObserver):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.evaluation_duration = Histogram(
            "opspilot_alert_evaluation_duration_seconds",
            "Time to evaluate one batch of rules (one chunk of a tick)",
            buckets=EVALUATION_BUCKETS, registry=r,
        )
        self.rules_evaluated = Counter(
            "opspilot_alert_rules_evaluated_total", "Rule evaluations", registry=r
        )
        self.incidents_opened = Counter(
            "opspilot_alert_incidents_opened_total", "Incidents opened by rules", registry=r
        )
        self.incidents_resolved = Counter(
            "opspilot_alert_incidents_resolved_total",
            "Incidents resolved because their condition cleared", registry=r,
        )
        self.notifications = Counter(
            "opspilot_alert_notifications_total",
            "Notifications by channel type and final outcome (delivered, failed, timed_out)",
            ["channel_type", "outcome"], registry=r,
        )
        self.ticks = Counter(
            "opspilot_alert_ticks_total", "Ticks seen by this replica (owned or skipped)",
            ["result"], registry=r,
        )
        self.retention_runs = Counter(
            "opspilot_retention_runs_total", "Retention runs by store and outcome (ok, failed)",
            ["store", "outcome"], registry=r,
        )
        self.retention_dropped = Counter(
            "opspilot_retention_dropped_total",
            "Partitions or daily indices dropped by retention", ["store"], registry=r,
        )
        self.compaction_duration = Histogram(
            "opspilot_compaction_duration_seconds", "Time of one compaction run",
            buckets=COMPACTION_BUCKETS, registry=r,
        )
        self.compaction_points = Counter(
            "opspilot_compaction_points_total", "Hot metric points moved into blocks",
            registry=r,
        )
        self.compaction_periods = Counter(
            "opspilot_compaction_periods_total", "Periods (series-hours) compacted or merged",
            registry=r,
        )
        self.compaction_backlog = Gauge(
            "opspilot_compaction_backlog_periods",
            "Closed periods still holding hot points after the last run", registry=r,
        )

    def evaluated(self, rules: int, seconds: float) -> None:
        self.rules_evaluated.inc(rules)
        self.evaluation_duration.observe(seconds)

    def incident_opened(self, rule: AlertRule) -> None:
        self.incidents_opened.inc()

    def incident_resolved(self, rule: AlertRule) -> None:
        self.incidents_resolved.inc()

    def notified(self, channel_type: str, outcome: str) -> None:
        self.notifications.labels(channel_type, outcome).inc()

    def ticked(self, owned: bool, rules: int) -> None:
        self.ticks.labels("owned" if owned else "skipped").inc()

    def retention_ran(self, store: str, dropped: int, failed: bool) -> None:
        self.retention_runs.labels(store, "failed" if failed else "ok").inc()
        self.retention_dropped.labels(store).inc(dropped)

    def compaction_ran(self, report: CompactionReport) -> None:
        self.compaction_duration.observe(report.seconds)
        self.compaction_points.inc(report.points)
        self.compaction_periods.inc(report.periods)
        self.compaction_backlog.set(report.backlog)


# -- the loops -----------------------------------------------------------------------------


async def run_alerts(
    scheduler: AlertScheduler,
    clock: Clock,
    stop: asyncio.Event,
    *,
    once: bool = False,
    force: bool = False,
    poll_seconds: float = 1.0,
    drain_seconds: float = 0.5,
    retention: Retention | None = None,
    compaction: Compaction | None = None,
) -> int:
    """Run until `stop` is set (or one tick with `once`, without retention or compaction).
    Returns the exit code."""
    if once:
        report = await scheduler.run_once(clock.now(), drain_seconds, force)
        tick = scheduler.last_tick
        if tick is not None and not tick.owned:
            # Not silent: the minute's tick belongs to whoever took it first.
            print(f"tick {tick.tick_key} ({tick.at.isoformat()}) was already taken by a"
                  " scheduler; nothing evaluated for it here (--force evaluates now"
                  " regardless)", flush=True)
        log.info("evaluated %d rules: %d incidents opened, %d resolved, %d skipped",
                 report.evaluated, len(report.fired), len(report.resolved), report.skipped)
        return 0
    loops = [_tick_loop(scheduler, clock, stop), _evaluate_loop(scheduler, stop, poll_seconds)]
    if retention is not None:
        loops.append(_retention_loop(retention, clock, stop))
    if compaction is not None:
        loops.append(periodic_loop(compaction.run, compaction.policy.every, clock, stop,
                                   "compaction"))
    await asyncio.gather(*loops)
    return 0


async def _retention_loop(retention: Retention, clock: Clock, stop: asyncio.Event) -> None:
    """At start, then at each period boundary: one replica per period drops what is due."""
    await periodic_loop(retention.run, retention.policy.every, clock, stop, "retention")


async def periodic_loop(run: Callable[[datetime], Awaitable[object]], every: timedelta,
                        clock: Clock, stop: asyncio.Event, name: str) -> None:
    """`run(now)` at start, then at each `every` boundary, until `stop`; a failure (a store
    or the lock's store down) skips the period: the next one tries again."""
    while not stop.is_set():
        now = clock.now()
        try:
            await run(now)
        except Exception as exc:
            message = exc.message if isinstance(exc, OpsPilotError) else repr(exc)
            log.warning("%s at %s skipped: %s", name, now.isoformat(), message)
        following = Bucketing(every).floor(now) + every
        if await _wait(stop, (following - clock.now()).total_seconds()):
            return


async def _tick_loop(scheduler: AlertScheduler, clock: Clock, stop: asyncio.Event) -> None:
    target = clock.now()
    while not stop.is_set():
        # Never before the boundary we slept for: a timer that wakes a hair early must not
        # ask for the previous tick again.
        now = max(clock.now(), target)
        try:
            report = await scheduler.tick(now)
            if report.owned:
                log.info("tick %s: %d rules in %d chunks", report.tick_key, report.rules,
                         report.chunks)
        except OpsPilotError as exc:
            log.warning("tick at %s skipped: %s", now.isoformat(), exc.message)
        except Exception:
            log.exception("tick at %s failed", now.isoformat())
        target = scheduler.tick_at(now) + scheduler.interval
        if await _wait(stop, (target - clock.now()).total_seconds()):
            return


async def _evaluate_loop(scheduler: AlertScheduler, stop: asyncio.Event, poll: float) -> None:
    failures = 0
    while not stop.is_set():
        try:
            await scheduler.evaluate_next(poll)
            failures = 0
        except Exception as exc:
            failures += 1
            message = exc.message if isinstance(exc, OpsPilotError) else repr(exc)
            log.warning("evaluation queue unavailable (%s); retrying", message)
            if await _wait(stop, min(30.0, 0.5 * 2 ** min(failures, 6))):
                return


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True when `stop` was set meanwhile."""
    try:
        async with asyncio.timeout(max(0.0, seconds)):
            await stop.wait()
    except TimeoutError:
        return stop.is_set()
    return True


# -- assembly ------------------------------------------------------------------------------


@attrs.frozen
class AlertEngine:
    rules: AlertRules
    evaluator: RuleEvaluator
    scheduler: AlertScheduler
    dispatcher: NotificationDispatcher
    telemetry: AlertTelemetry
    retention: Retention
    compaction: Compaction | None


def build_engine(
    container: Any,
    notifier: Notifier,
    lock: SchedulerLock,
    queue: EvaluationQueue,
    interval: timedelta,
    telemetry: AlertTelemetry | None = None,
) -> AlertEngine:
    """The alert use cases on the container's stores and the given edges."""
    telemetry = telemetry or AlertTelemetry()
    clock = container.clock()
    analyzer = analyzer_of(container)
    dispatcher = NotificationDispatcher(
        notifier, container.channels(), container.incidents(), clock, observer=telemetry
    )
    evaluator = RuleEvaluator(
        container.metric_store(), container.rules(), container.incidents(), dispatcher,
        analyzer, observer=telemetry,
    )
    rules = AlertRules(container.rules(), container.channels(), container.incidents(),
                       dispatcher, clock, container.ids(), analyzer)
    scheduler = AlertScheduler(container.rules(), lock, queue, evaluator, clock,
                               interval=interval, observer=telemetry)
    retention = Retention(container.metric_store(), container.log_store(),
                          container.log_metadata(), lock, container.retention_policy(),
                          observer=telemetry, compaction=container.metric_compaction())
    compaction = None
    if container.config.metric_compaction():
        compaction = compaction_job(container, lock, telemetry)
    return AlertEngine(rules, evaluator, scheduler, dispatcher, telemetry, retention,
                       compaction)


def compaction_job(container: Any, lock: SchedulerLock,
                   observer: CompactionObserver | None = None) -> Compaction:
    return Compaction(container.metric_compaction(), lock, container.compaction_policy(),
                      observer)


def alert_rules_service(container: Any, notifier: Notifier | None = None) -> AlertRules:
    """The API's use cases (`alert_routes(alert_rules_service(container))`)."""
    clock = container.clock()
    notifier = notifier or container.notifier()
    dispatcher = NotificationDispatcher(notifier, container.channels(), container.incidents(),
                                        clock)
    return AlertRules(container.rules(), container.channels(), container.incidents(),
                      dispatcher, clock, container.ids(), analyzer_of(container))


def analyzer_of(container: Any) -> Analyzer | None:
    try:
        return container.analyzer()  # type: ignore[no-any-return]
    except ImportError as exc:  # the in-process analyzer's libraries are missing
        log.warning("no analyzer (%s): anomaly rules are refused and skipped", exc)
        return None


@asynccontextmanager
async def scheduler_lock(settings: Settings) -> AsyncIterator[SchedulerLock]:
    """The tick lock the settings ask for (PostgreSQL's when there is a database)."""
    if not settings.database_url:
        yield InMemorySchedulerLock()
        return
    from opspilot.adapters.postgres.scheduler_lock import PostgresSchedulerLock

    pg_lock = PostgresSchedulerLock(
        settings.database_url, schema=settings.database_schema,
        owner=f"{socket.gethostname()}:{os.getpid()}",
    )
    await pg_lock.connect()
    try:
        yield pg_lock
    finally:
        await pg_lock.close()


@asynccontextmanager
async def alert_edges(
    settings: Settings, container: Any
) -> AsyncIterator[tuple[Notifier, SchedulerLock, EvaluationQueue]]:
    """The notifier, tick lock and evaluation queue the settings ask for, opened and closed
    here (the stores are the container's)."""
    async with AsyncExitStack() as stack:
        notifier: Notifier = container.notifier()
        if isinstance(notifier, RecordingNotifier):  # the container has no real one yet
            from opspilot.adapters.notify.dispatch import channel_notifier_resource

            notifier = await stack.enter_async_context(asynccontextmanager(
                channel_notifier_resource)(settings.webhook_allowlist, settings.smtp_host,
                                           settings.smtp_port, settings.smtp_sender,
                                           settings.public_url))
        lock = await stack.enter_async_context(scheduler_lock(settings))
        queue: EvaluationQueue = InMemoryEvaluationQueue()
        if settings.amqp_url:
            from opspilot.adapters.rabbitmq.evaluation_queue import RabbitMQEvaluationQueue

            amqp_queue = RabbitMQEvaluationQueue(settings.amqp_url, prefix=settings.queue_prefix)
            await amqp_queue.connect()
            stack.push_async_callback(amqp_queue.close)
            queue = amqp_queue
        yield notifier, lock, queue


async def run_alert_process(
    settings: Settings,
    container: Any,
    once: bool,
    *,
    stop: asyncio.Event | None = None,
    metrics_port: int | None = DEFAULT_METRICS_PORT,
    metrics_host: str = "127.0.0.1",
    telemetry: AlertTelemetry | None = None,
    force: bool = False,
) -> int:
    """`opspilot alerts [--once [--force]]`. The container's resources must be initialised. Without
    `stop`, SIGINT/SIGTERM stop the loop; `metrics_port=None` serves no /metrics (`serve`
    passes its own `telemetry` and serves its registry on the API's /metrics)."""
    interval = timedelta(seconds=settings.alert_interval_seconds)
    async with alert_edges(settings, container) as (notifier, lock, queue):
        engine = build_engine(container, notifier, lock, queue, interval, telemetry)
        if stop is None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        runner = None
        if metrics_port is not None and not once:
            from opspilot.entrypoints.worker_metrics import start_metrics_server

            runner = await start_metrics_server(engine.telemetry, metrics_host, metrics_port)
        try:
            log.info("alert engine running every %gs (lock: %s, queue: %s)",
                     interval.total_seconds(), type(lock).__name__, type(queue).__name__)
            return await run_alerts(engine.scheduler, container.clock(), stop, once=once,
                                    force=force, retention=engine.retention, compaction=engine.compaction)
        finally:
            if runner is not None:
                await runner.cleanup()
