"""Retention: drop metric points and logs older than their retention, once per period.

Every scheduler replica calls `run` each period; the tick lock lets exactly one of them do
the work for a given period (across restarts too), so N replicas never race to drop the
same partitions. The stores drop whole days (partitions, daily indices), never rows one by
one: retention costs a catalogue change, not a scan.

Metrics have two retentions when the store compacts (MetricCompaction, ADR 0017): raw values
expire after `metrics` (hot rows and compacted blocks), and the per-hour summaries that
outlive them after `metric_summaries` (downsampling: long-range charts still answer). A
project may set its own of both (MetricRetention, read from the tenancy store each run);
the stores then drop that project's data by its own cutoffs.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta

import attrs

from opspilot.domain.errors import OpsPilotError
from opspilot.domain.ports import (
    LogMetadataStore,
    LogStore,
    MetricCompaction,
    MetricStore,
    RetentionObserver,
    SchedulerLock,
    TenancyStore,
)
from opspilot.domain.tenancy import MetricRetention
from opspilot.domain.timewindow import Bucketing

log = logging.getLogger(__name__)


@attrs.frozen
class RetentionPolicy:
    """How long each kind of data is kept; None keeps it forever."""

    metrics: timedelta | None  # raw metric values
    logs: timedelta | None
    every: timedelta = timedelta(hours=1)
    metric_summaries: timedelta | None = None  # None: as long as the values

    @classmethod
    def of_days(cls, metric_days: float, log_days: float,
                summary_days: float | None = None) -> RetentionPolicy:
        """From the settings: zero or less means keep forever. Summaries are kept at least
        as long as the values they summarise."""
        metrics = timedelta(days=metric_days) if metric_days > 0 else None
        summaries = metrics
        if summary_days is not None:
            summaries = timedelta(days=summary_days) if summary_days > 0 else None
            if summaries is not None and metrics is not None:
                summaries = max(summaries, metrics)
            if metrics is None:
                summaries = None
        return cls(metrics, timedelta(days=log_days) if log_days > 0 else None,
                   metric_summaries=summaries)

    def for_project(self, own: MetricRetention) -> tuple[timedelta | None, timedelta | None]:
        """(values, summaries) kept for a project with its own retention: each of its
        settings replaces the server's; summaries are kept at least as long as values."""
        values = timedelta(days=own.values_days) if own.values_days else self.metrics
        summaries = (timedelta(days=own.summary_days) if own.summary_days
                     else self.metric_summaries)
        if values is None:
            return None, None
        return values, None if summaries is None else max(summaries, values)


@attrs.frozen
class RetentionReport:
    tick_key: str
    owned: bool
    dropped: Mapping[str, list[str]] = attrs.field(factory=dict)
    failed: Mapping[str, str] = attrs.field(factory=dict)


Cutoffs = tuple[datetime | None, dict[str, datetime | None]]  # default, by project
DropMetrics = Callable[[datetime | None, dict[str, datetime | None]], Awaitable[list[str]]]


class Retention:
    def __init__(
        self,
        metrics: MetricStore,
        logs: LogStore,
        log_metadata: LogMetadataStore,
        lock: SchedulerLock,
        policy: RetentionPolicy,
        observer: RetentionObserver | None = None,
        compaction: MetricCompaction | None = None,
        tenancy: TenancyStore | None = None,
    ) -> None:
        self._logs: tuple[tuple[str, Callable[[datetime], Awaitable[list[str]]],
                                timedelta | None], ...] = (
            ("logs", logs.drop_before, policy.logs),
            ("log_metadata", log_metadata.drop_before, policy.logs),
        )
        # (name, drop, which retention: 0 values, 1 summaries)
        self._metrics: tuple[tuple[str, DropMetrics, int], ...] = (
            ("metric_values", compaction.expire_values_before, 0),
            ("metrics", metrics.drop_before, 1),
        ) if compaction is not None else (("metrics", metrics.drop_before, 0),)
        self._tenancy = tenancy
        self._lock = lock
        self.policy = policy
        self._observer = observer or RetentionObserver()

    def tick_key(self, now: datetime) -> str:
        start = Bucketing(self.policy.every).floor(now)
        return f"retention/{int(self.policy.every.total_seconds())}s/{start.isoformat()}"

    async def run(self, now: datetime) -> RetentionReport:
        """Drop what is due, if this replica owns the period. One store failing does not
        stop the others; the next period tries again. Raises ServiceUnavailable when the
        lock cannot be asked (nothing is dropped then)."""
        key = self.tick_key(now)
        if not await self._lock.acquire_tick(key):
            return RetentionReport(key, owned=False)
        dropped: dict[str, list[str]] = {}
        failed: dict[str, str] = {}
        try:
            cutoffs = await self._metric_cutoffs(now)
        except Exception as exc:  # the projects' own retentions cannot be read: wait
            self._failed("metrics", exc, failed)
            cutoffs = None
        for name, drop, which in self._metrics if cutoffs is not None else ():
            assert cutoffs is not None
            default, own = cutoffs[which]
            if default is None and not any(c is not None for c in own.values()):
                continue
            if which == 0 and len(self._metrics) == 2 and cutoffs[0] == cutoffs[1]:
                continue  # values and summaries go together: drop_before does both
            await self._drop(name, functools.partial(drop, default, own), dropped, failed)
        for name, drop_before, keep in self._logs:
            if keep is not None:
                await self._drop(name, functools.partial(drop_before, now - keep), dropped,
                                 failed)
        return RetentionReport(key, owned=True, dropped=dropped, failed=failed)

    async def _metric_cutoffs(self, now: datetime) -> tuple[Cutoffs, Cutoffs]:
        """(values, summaries) cutoffs: the default's, and each project with its own."""
        own = await self._tenancy.metric_retentions() if self._tenancy is not None else {}
        values: dict[str, datetime | None] = {}
        summaries: dict[str, datetime | None] = {}
        for project_id, retention in own.items():
            keep_values, keep_summaries = self.policy.for_project(retention)
            values[project_id] = _cutoff(now, keep_values)
            summaries[project_id] = _cutoff(now, keep_summaries)
        return ((_cutoff(now, self.policy.metrics), values),
                (_cutoff(now, self.policy.metric_summaries), summaries))

    async def _drop(self, name: str, drop: Callable[[], Awaitable[list[str]]],
                    dropped: dict[str, list[str]], failed: dict[str, str]) -> None:
        try:
            dropped[name] = await drop()
        except Exception as exc:
            self._failed(name, exc, failed)
            return
        self._observer.retention_ran(name, len(dropped[name]), failed=False)
        if dropped[name]:
            log.info("retention dropped %d from %s: %s", len(dropped[name]), name,
                     ", ".join(dropped[name]))

    def _failed(self, name: str, exc: Exception, failed: dict[str, str]) -> None:
        failed[name] = exc.message if isinstance(exc, OpsPilotError) else repr(exc)
        log.warning("retention of %s failed: %s", name, failed[name])
        self._observer.retention_ran(name, 0, failed=True)


def _cutoff(now: datetime, keep: timedelta | None) -> datetime | None:
    return None if keep is None else now - keep
