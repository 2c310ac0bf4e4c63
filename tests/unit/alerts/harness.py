"""The alert engine on in-memory adapters, with a clock and ids tests control."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from opspilot.adapters.clock_and_ids import FixedClock
from opspilot.adapters.memory.alerting import (
    InMemoryChannelStore,
    InMemoryIncidentStore,
    InMemoryRuleStore,
)
from opspilot.adapters.memory.metrics import InMemoryMetricStore
from opspilot.adapters.memory.notify import RecordingNotifier
from opspilot.adapters.memory.scheduling import InMemoryEvaluationQueue, InMemorySchedulerLock
from opspilot.application.alerting import (
    AlertRules,
    AlertScheduler,
    NotificationDispatcher,
    RetryPolicy,
    RuleEvaluator,
)
from opspilot.domain.ingest import MetricBatch
from opspilot.domain.metrics import MetricPoint
from opspilot.domain.ports import Analyzer, Notifier

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


class SequentialIds:
    def __init__(self, prefix: str = "id") -> None:
        self._counter = itertools.count(1)
        self._prefix = prefix

    def new_id(self) -> str:
        return f"{self._prefix}-{next(self._counter)}"


class CountingMetricStore(InMemoryMetricStore):
    """The in-memory store, counting the calls the alert engine makes."""

    def __init__(self) -> None:
        super().__init__()
        self.window_calls: list[int] = []
        self.query_calls: list[int] = []

    async def aggregate_windows(self, requests: Sequence[Any]) -> list[Any]:
        self.window_calls.append(len(requests))
        return await super().aggregate_windows(requests)

    async def query(self, queries: Sequence[Any]) -> list[Any]:
        self.query_calls.append(len(queries))
        return await super().query(queries)


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class Engine:
    """Stores survive `restart()`; everything built on them is built anew."""

    def __init__(
        self, notifier: Notifier | None = None, analyzer: Analyzer | None = None,
        policy: RetryPolicy = RetryPolicy(backoff_base=0.01, backoff_cap=0.05),
    ) -> None:
        self.clock = FixedClock(T0)
        self.metrics = CountingMetricStore()
        self.rules = InMemoryRuleStore()
        self.channels = InMemoryChannelStore()
        self.incidents = InMemoryIncidentStore()
        self.notifier: Any = notifier or RecordingNotifier()
        self.analyzer = analyzer
        self.policy = policy
        self.lock = InMemorySchedulerLock()
        self.queue = InMemoryEvaluationQueue()
        self.ids = SequentialIds()
        self.sleeps = Sleeps()
        self.restart()

    def restart(self) -> None:
        self.dispatcher = NotificationDispatcher(
            self.notifier, self.channels, self.incidents, self.clock, self.policy,
            sleep=self.sleeps,
        )
        self.evaluator = RuleEvaluator(
            self.metrics, self.rules, self.incidents, self.dispatcher, self.analyzer
        )
        self.alerts = AlertRules(
            self.rules, self.channels, self.incidents, self.dispatcher, self.clock, self.ids,
            self.analyzer,
        )
        self.scheduler = AlertScheduler(
            self.rules, self.lock, self.queue, self.evaluator, self.clock, interval=MINUTE,
        )

    async def write(
        self, project_id: str, name: str, values: Sequence[float], start: datetime = T0,
        step: timedelta = timedelta(seconds=30), service: str | None = "api",
    ) -> None:
        points = [
            MetricPoint(project_id, start + i * step, name, float(v), service)
            for i, v in enumerate(values)
        ]
        await self.metrics.write_batches(
            [MetricBatch(f"{name}-{start.isoformat()}-{len(values)}", project_id, start, points)]
        )

    async def evaluate_at(self, moment: datetime) -> Any:
        self.clock.current = moment
        enabled = await self.rules.enabled_rules()
        return await self.evaluator.evaluate(enabled, moment)

