"""The logs viewer's use cases: search, context, volume, error spikes, patterns."""

from __future__ import annotations

from opspilot.application import rendering
from opspilot.application.limits import QueryLimits
from opspilot.application.rendering import (
    ErrorSpikes,
    LogPatterns,
    LogVolume,
    context_doc,
    page_doc,
    patterns_doc,
    spikes_doc,
    volume_doc,
)
from opspilot.domain.analysis import LogCluster, LogLine
from opspilot.domain.errors import LimitExceeded, NotFound, ValidationError
from opspilot.domain.logs import (
    CONTEXT_MAX,
    SPIKE_METHOD,
    CountBucket,
    LogContext,
    LogFilter,
    LogLevel,
    LogPage,
    LogQuery,
    SpikeBucket,
    VolumeQuery,
    flag_spikes,
)
from opspilot.domain.ports import Analyzer, LogStore
from opspilot.domain.timewindow import Bucketing, TimeRange

SPIKE_WINDOW, SPIKE_THRESHOLD, SPIKE_MIN = 30, 3.0, 3


class LogQueries:
    def __init__(self, store: LogStore, analyzer: Analyzer, limits: QueryLimits) -> None:
        self._store = store
        self._analyzer = analyzer
        self._limits = limits

    def _check(self, log_filter: LogFilter) -> None:
        if log_filter.window.span > self._limits.max_range:
            TimeRange.checked(log_filter.window.start, log_filter.window.end, self._limits.max_range)
        if log_filter.search and len(log_filter.search) > self._limits.max_search_length:
            raise LimitExceeded("search", f"at most {self._limits.max_search_length} characters")

    async def search(self, query: LogQuery) -> rendering.LogPage:
        return page_doc(await self.page(query), query.limit, query.offset)

    async def page(self, query: LogQuery) -> LogPage:
        """One page of matching logs, newest first, with the cursor of the next page."""
        self._check(query.filter)
        return await self._store.search(query)

    async def context(
        self, project_id: str, log_id: str, before: int = 10, after: int = 10,
        across_services: bool = False,
    ) -> rendering.LogContext:
        return context_doc(
            await self.surrounding(project_id, log_id, before, after, across_services))

    async def surrounding(
        self, project_id: str, log_id: str, before: int = 10, after: int = 10,
        across_services: bool = False,
    ) -> LogContext:
        """The log and up to `before`/`after` of its neighbours in time (of its service, or
        of every service with `across_services`). Raises NotFound when the project has no
        such log."""
        for field, value in (("before", before), ("after", after)):
            if not 0 <= value <= CONTEXT_MAX:
                raise ValidationError(field, f"between 0 and {CONTEXT_MAX}")
        if not log_id or len(log_id) > 200:
            raise NotFound("no such log in this project", {"field": "log_id"})
        return await self._store.context(project_id, log_id, before, after, across_services)

    async def volume(self, query: VolumeQuery) -> LogVolume:
        return volume_doc(await self.counts(query), query.bucketing.label)

    async def counts(self, query: VolumeQuery) -> list[CountBucket]:
        """Logs per bucket over the window (empty buckets included)."""
        self._check(query.filter)
        query.bucketing.check_count(query.window, self._limits.max_buckets)
        return await self._store.volume(query)

    async def error_spikes(
        self, project_id: str, window: TimeRange, bucketing: Bucketing, service: str | None = None
    ) -> ErrorSpikes:
        flagged = await self.spikes(project_id, window, bucketing, service)
        method = SPIKE_METHOD.format(
            window=SPIKE_WINDOW, threshold=SPIKE_THRESHOLD, min_count=SPIKE_MIN
        )
        return spikes_doc(flagged, bucketing.label, method)

    async def spikes(
        self, project_id: str, window: TimeRange, bucketing: Bucketing, service: str | None = None
    ) -> list[SpikeBucket]:
        """ERROR and FATAL counts per bucket, each scored against its trailing baseline."""
        query = VolumeQuery(project_id, window, bucketing, (LogLevel.ERROR, LogLevel.FATAL), service)
        self._check(LogFilter(project_id, window))
        bucketing.check_count(window, self._limits.max_buckets)
        counts = await self._store.volume(query)
        return flag_spikes(counts, SPIKE_WINDOW, SPIKE_THRESHOLD, SPIKE_MIN)

    async def patterns(self, log_filter: LogFilter, limit: int) -> LogPatterns:
        lines = await self._sample(log_filter, limit)
        clusters = await self._analyzer.cluster_logs(lines) if lines else []
        return patterns_doc(len(lines), clusters)

    async def clusters(self, log_filter: LogFilter, limit: int) -> list[LogCluster]:
        """Up to `limit` matching logs (newest first) clustered into templates."""
        lines = await self._sample(log_filter, limit)
        return await self._analyzer.cluster_logs(lines) if lines else []

    async def _sample(self, log_filter: LogFilter, limit: int) -> list[LogLine]:
        self._check(log_filter)
        if not 1 <= limit <= self._limits.max_pattern_logs:
            raise LimitExceeded("limit", f"between 1 and {self._limits.max_pattern_logs}")
        lines: list[LogLine] = []
        async for record in self._store.export(log_filter):
            lines.append(LogLine(record.message, record.level.value))
            if len(lines) >= limit:
                break
        return lines
