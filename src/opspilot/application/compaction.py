"""Compaction of closed metric periods into the compact tier, as a periodic job.

Every scheduler replica calls `run` each `every`; the tick lock lets one of them work per
tick. Inside, the store takes each period under a lock of its own, so an on-demand run
(`opspilot compact --once`, `run_once`) may overlap a scheduled one without taking the same
period twice. A period is compacted once it ended `delay` ago; points arriving later for it
are merged by the next run.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

import attrs

from opspilot.domain.ports import (
    CompactionObserver,
    CompactionReport,
    MetricCompaction,
    SchedulerLock,
)
from opspilot.domain.timewindow import Bucketing

log = logging.getLogger(__name__)


@attrs.frozen
class CompactionPolicy:
    delay: timedelta = timedelta(minutes=30)
    every: timedelta = timedelta(minutes=5)
    max_periods: int = 500  # per run; the rest is the next run's backlog

    @classmethod
    def of_settings(cls, delay_minutes: float, every_seconds: float,
                    max_periods: int) -> CompactionPolicy:
        return cls(timedelta(minutes=delay_minutes), timedelta(seconds=every_seconds),
                   max_periods)


class Compaction:
    def __init__(self, store: MetricCompaction, lock: SchedulerLock, policy: CompactionPolicy,
                 observer: CompactionObserver | None = None) -> None:
        self._store = store
        self._lock = lock
        self.policy = policy
        self._observer = observer or CompactionObserver()

    def tick_key(self, now: datetime) -> str:
        start = Bucketing(self.policy.every).floor(now)
        return f"compaction/{int(self.policy.every.total_seconds())}s/{start.isoformat()}"

    async def run(self, now: datetime) -> CompactionReport:
        """Compact what is due if this replica owns the tick. Raises ServiceUnavailable when
        the lock cannot be asked, TransientStoreError when the store cannot answer."""
        key = self.tick_key(now)
        if not await self._lock.acquire_tick(key):
            return CompactionReport(key, owned=False)
        return await self.run_once(now, key)

    async def run_once(self, now: datetime, key: str = "on-demand") -> CompactionReport:
        started = time.perf_counter()
        result = await self._store.compact(now - self.policy.delay, self.policy.max_periods)
        report = CompactionReport(key, True, result.periods, result.points, result.backlog,
                                  time.perf_counter() - started)
        self._observer.compaction_ran(report)
        if report.periods:
            log.info("compacted %d periods (%d points) in %.2fs; %d left", report.periods,
                     report.points, report.seconds, report.backlog)
        return report
