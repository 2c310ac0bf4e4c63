"""Retention: drop metric points and logs older than their retention, once per period.

Every scheduler replica calls `run` each period; the tick lock lets exactly one of them do
the work for a given period (across restarts too), so N replicas never race to drop the
same partitions. The stores drop whole days (partitions, daily indices), never rows one by
one: retention costs a catalogue change, not a scan.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta

import attrs

from opspilot.domain.errors import OpsPilotError
from opspilot.domain.ports import LogMetadataStore, LogStore, MetricStore, SchedulerLock
from opspilot.domain.timewindow import Bucketing

log = logging.getLogger(__name__)


@attrs.frozen
class RetentionPolicy:
    """How long each kind of data is kept; None keeps it forever."""

    metrics: timedelta | None
    logs: timedelta | None
    every: timedelta = timedelta(hours=1)

    @classmethod
    def of_days(cls, metric_days: float, log_days: float) -> RetentionPolicy:
        """From the settings: zero or less means keep forever."""
        return cls(
            timedelta(days=metric_days) if metric_days > 0 else None,
            timedelta(days=log_days) if log_days > 0 else None,
        )


@attrs.frozen
class RetentionReport:
    tick_key: str
    owned: bool
    dropped: Mapping[str, list[str]] = attrs.field(factory=dict)
    failed: Mapping[str, str] = attrs.field(factory=dict)


class RetentionObserver:
    """Telemetry hooks; the default does nothing."""

    def retention_ran(self, store: str, dropped: int, failed: bool) -> None: ...


class Retention:
    def __init__(
        self,
        metrics: MetricStore,
        logs: LogStore,
        log_metadata: LogMetadataStore,
        lock: SchedulerLock,
        policy: RetentionPolicy,
        observer: RetentionObserver | None = None,
    ) -> None:
        self._targets = (
            ("metrics", metrics, policy.metrics),
            ("logs", logs, policy.logs),
            ("log_metadata", log_metadata, policy.logs),
        )
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
        for name, store, keep in self._targets:
            if keep is None:
                continue
            try:
                dropped[name] = await store.drop_before(now - keep)
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
