"""Sharing ticks between scheduler replicas: one owns each tick (`SchedulerLock`) and
publishes its rules in chunks on the `EvaluationQueue`; every replica evaluates the chunks
it takes."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import attrs

from opspilot.application.alerting.evaluation import EvaluationReport, RuleEvaluator
from opspilot.domain.alerts import AlertRule
from opspilot.domain.ports import (
    AlertObserver,
    Clock,
    EvaluationQueue,
    EvaluationTask,
    RuleRef,
    RuleStore,
    SchedulerLock,
)
from opspilot.domain.timewindow import Bucketing

log = logging.getLogger(__name__)


@attrs.frozen
class TickReport:
    tick_key: str
    at: datetime
    owned: bool
    rules: int = 0
    chunks: int = 0


class AlertScheduler:
    """Owns ticks (one replica per tick) and evaluates the chunks it takes from the queue.

    Every replica runs both halves: `tick` at each interval boundary (only the lock's
    winner publishes), and `evaluate_next` in a loop (competing consumers)."""

    def __init__(
        self,
        rules: RuleStore,
        lock: SchedulerLock,
        queue: EvaluationQueue,
        evaluator: RuleEvaluator,
        clock: Clock,
        interval: timedelta = timedelta(seconds=60),
        chunk_size: int = 500,
        max_attempts: int = 3,
        observer: AlertObserver | None = None,
    ) -> None:
        if interval <= timedelta(0) or chunk_size < 1:
            raise ValueError("interval and chunk_size must be positive")
        self._rules = rules
        self._lock = lock
        self._queue = queue
        self._evaluator = evaluator
        self._clock = clock
        self.interval = interval
        self._chunk_size = chunk_size
        self._max_attempts = max_attempts
        self._stale_after = interval * 5
        self._observer = observer or AlertObserver()
        self._loaded_tick: str | None = None
        self._loaded: dict[str, dict[str, AlertRule]] = {}
        self.last_tick: TickReport | None = None

    def tick_at(self, now: datetime) -> datetime:
        return Bucketing(self.interval).floor(now)

    def tick_key(self, at: datetime) -> str:
        return f"alerts/{int(self.interval.total_seconds())}s/{at.isoformat()}"

    async def tick(self, now: datetime, force: bool = False) -> TickReport:
        """Publish the tick's chunks if this replica takes the tick (`force`: without asking
        the lock, for an operator's `opspilot alerts --once --force`)."""
        at = self.tick_at(now)
        key = self.tick_key(at)
        if not force and not await self._lock.acquire_tick(key):
            self._observer.ticked(False, 0)
            return TickReport(key, at, False)
        rules = await self._rules.enabled_rules()
        rules.sort(key=lambda r: (r.project_id, r.id))
        refs = [RuleRef(r.project_id, r.id) for r in rules]
        pieces = [refs[i:i + self._chunk_size] for i in range(0, len(refs), self._chunk_size)]
        tasks = [EvaluationTask(key, at, tuple(p), i, len(pieces)) for i, p in enumerate(pieces)]
        if tasks:
            await self._queue.publish(tasks)
        self._observer.ticked(True, len(refs))
        return TickReport(key, at, True, len(refs), len(tasks))

    async def evaluate_next(self, wait_seconds: float) -> EvaluationReport | None:
        """Take one chunk and evaluate it; None when no chunk came within `wait_seconds`."""
        delivery = await self._queue.take(wait_seconds)
        if delivery is None:
            return None
        task = delivery.task
        if self._clock.now() - task.at > self._stale_after:
            log.warning("chunk %d of %s is stale; dropped", task.chunk, task.tick_key)
            await delivery.ack()
            return EvaluationReport(skipped=len(task.rules))
        try:
            report = await self._evaluator.evaluate(await self._load(task), task.at)
        except Exception:
            log.exception("chunk %d of %s failed (attempt %d)", task.chunk, task.tick_key,
                          delivery.attempt)
            if delivery.attempt < self._max_attempts:
                await delivery.retry()
            else:  # the next tick observes again; an evaluation lost is one sample lost
                await delivery.ack()
            return EvaluationReport(skipped=len(task.rules))
        await delivery.ack()
        return report

    async def run_once(self, now: datetime, drain_timeout: float = 0.0,
                       force: bool = False) -> EvaluationReport:
        """`opspilot alerts --once`: take the tick if nobody has (or regardless, `force`),
        then evaluate every chunk waiting in the queue. `last_tick` says whether the tick
        was taken here."""
        self.last_tick = await self.tick(now, force)
        total = EvaluationReport()
        while (report := await self.evaluate_next(drain_timeout)) is not None:
            total = total + report
        return total

    async def _load(self, task: EvaluationTask) -> list[AlertRule]:
        """The enabled rules named by a chunk, read with one `list_rules` per project (and
        per tick: the chunks of a tick this replica takes share the read). A rule deleted
        or disabled since the tick is left out."""
        if self._loaded_tick != task.tick_key:
            self._loaded_tick, self._loaded = task.tick_key, {}
        found: list[AlertRule] = []
        for ref in task.rules:
            project = self._loaded.get(ref.project_id)
            if project is None:
                rules = await self._rules.list_rules(ref.project_id)
                project = self._loaded[ref.project_id] = {r.id: r for r in rules}
            rule = project.get(ref.rule_id)
            if rule is not None and rule.enabled:
                found.append(rule)
        return found
