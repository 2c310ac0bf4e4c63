"""Retention: drop metric points and logs older than their retention, once per period.

Every scheduler replica calls `run` each period; the tick lock lets exactly one of them do
the work for a given period (across restarts too), so N replicas never race to drop the
same partitions. The stores drop whole days (partitions, daily indices), never rows one by
one: retention costs a catalogue change, not a scan.

Metrics have two retentions when the store compacts (MetricCompaction, ADR 0017): raw values
expire after `metrics` (hot rows and compacted blocks), and the per-hour summaries that
outlive them after `metric_summaries` (downsampling: long-range charts still answer).
"""

from __future__ import annotations

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
)
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


@attrs.frozen
class RetentionReport:
    tick_key: str
    owned: bool
    dropped: Mapping[str, list[str]] = attrs.field(factory=dict)
    failed: Mapping[str, str] = attrs.field(factory=dict)


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
    ) -> None:
        self._targets: tuple[tuple[str, Callable[[datetime], Awaitable[list[str]]],
                                   timedelta | None], ...] = (
            ("logs", logs.drop_before, policy.logs),
            ("log_metadata", log_metadata.drop_before, policy.logs),
        )
        if compaction is not None and policy.metric_summaries != policy.metrics:
            self._targets = (
                ("metric_values", compaction.expire_values_before, policy.metrics),
                ("metrics", metrics.drop_before, policy.metric_summaries),
                *self._targets,
            )
        else:
            self._targets = (("metrics", metrics.drop_before, policy.metrics), *self._targets)
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
        for name, drop_before, keep in self._targets:
            if keep is None:
                continue
            try:
                dropped[name] = await drop_before(now - keep)
            except Exception as exc:
                failed[name] = exc.message if isinstance(exc, OpsPilotError) else repr(exc)
                log.warning("retention of %s failed: %s", name, failed[name])
                self._observer.retention_ran(name, 0, failed=True)
                continue
            self._observer.retention_ran(name, len(dropped[name]), failed=False)
            if dropped[name]:
                log.info("retention dropped %d from %s: %s", len(dropped[name]), name,
                         ", ".join(dropped[name]))
        return RetentionReport(key, owned=True, dropped=dropped, failed=failed)
