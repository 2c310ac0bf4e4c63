"""The scheduler process: `opspilot alerts [--once]`, and the same loops in `opspilot serve`.

Every replica runs four loops: the ticker (at each interval boundary, try to own the tick;
the owner publishes the enabled rules in chunks), the evaluator (take chunks, evaluate,
ack), retention (each hour, the replica that owns the hour drops the data past its
retention), and metric compaction (every 5 minutes, the owner compacts the closed hours).
SIGTERM (the `stop` event) ends them after the chunk in hand is finished.

Everything is the container's (`alert_scheduler`, `retention`, `compaction`; the tick lock
and the evaluation queue are its `AlertConnection`s). Telemetry (`AlertTelemetry`, its own
Prometheus registry) is served on `/metrics` of a small side server when a metrics port is
given.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from opspilot.adapters.prometheus.serving import start_metrics_server
from opspilot.application.alerting import AlertScheduler
from opspilot.application.compaction import Compaction
from opspilot.application.retention import Retention
from opspilot.container import Container
from opspilot.domain.errors import OpsPilotError
from opspilot.domain.ports import Clock
from opspilot.domain.timewindow import Bucketing

log = logging.getLogger("opspilot.alerts")

DEFAULT_METRICS_PORT = 9102

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


# -- the process ---------------------------------------------------------------------------


async def run_alert_process(
    container: Container,
    once: bool,
    *,
    stop: asyncio.Event | None = None,
    metrics_port: int | None = DEFAULT_METRICS_PORT,
    metrics_host: str = "127.0.0.1",
    force: bool = False,
) -> int:
    """`opspilot alerts [--once [--force]]`, on a container started with `alerting=True`.
    Without `stop`, SIGINT/SIGTERM stop the loop; `metrics_port=None` serves no /metrics
    (`serve` serves the alert instruments on the API's /metrics)."""
    scheduler = container.alert_scheduler()
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    runner = None
    if metrics_port is not None and not once:
        runner = await start_metrics_server(container.alert_telemetry().registry,
                                            metrics_host, metrics_port)
    try:
        log.info("alert engine running every %gs (lock: %s, queue: %s)",
                 scheduler.interval.total_seconds(),
                 type(container.scheduler_lock()).__name__,
                 type(container.evaluation_queue()).__name__)
        compaction = container.compaction() if container.config.metric_compaction() else None
        return await run_alerts(scheduler, container.clock(), stop, once=once, force=force,
                                retention=container.retention(), compaction=compaction)
    finally:
        if runner is not None:
            await runner.cleanup()
