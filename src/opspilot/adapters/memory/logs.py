"""In-memory log store and log metadata, answering as the OpenSearch adapter does."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

from opspilot.domain import textsearch
from opspilot.domain.errors import NotFound, RecordsRejected
from opspilot.domain.ingest import LogBatch
from opspilot.domain.logs import (
    CountBucket,
    LogContext,
    LogFilter,
    LogLevel,
    LogPage,
    LogQuery,
    LogRecord,
    VolumeQuery,
    next_cursor,
)
from opspilot.domain.storable import first_problem
from opspilot.domain.timewindow import TimeRange, utc_day_start


class InMemoryLogStore:
    def __init__(self) -> None:
        self._records: dict[tuple[str, str], LogRecord] = {}
        self._lock = asyncio.Lock()

    async def write_batches(self, batches: Sequence[LogBatch]) -> int:
        async with self._lock:
            for batch in batches:
                for record in batch.records:
                    self._records[(record.project_id, record.id)] = record
        return sum(len(b.records) for b in batches)

    def _matching(self, log_filter: LogFilter) -> list[LogRecord]:
        clauses = textsearch.parse(log_filter.search) if log_filter.search else []
        found = [
            r for (pid, _), r in self._records.items()
            if pid == log_filter.project_id and _passes(r, log_filter, clauses)
        ]
        found.sort(key=lambda r: r.sort_key, reverse=True)
        return found

    async def drop_before(self, cutoff: datetime) -> list[str]:
        """Drops every record before the start of cutoff's UTC day (as whole daily indices
        would); returns the days emptied."""
        async with self._lock:
            return _drop_before(self._records, cutoff)

    async def search(self, query: LogQuery) -> LogPage:
        found = self._matching(query.filter)
        if query.cursor is not None:
            mark = (query.cursor.timestamp, query.cursor.log_id)
            page = [r for r in found if r.sort_key < mark][: query.limit]
        else:
            page = found[query.offset : query.offset + query.limit]
        return LogPage(page, len(found), next_cursor(page, query.limit))

    async def get(self, project_id: str, log_id: str) -> LogRecord | None:
        return self._records.get((project_id, log_id))

    async def context(
        self, project_id: str, log_id: str, before: int, after: int,
        across_services: bool = False,
    ) -> LogContext:
        anchor = await self.get(project_id, log_id)
        if anchor is None:
            raise NotFound("no such log in this project", {"field": "log_id", "log_id": log_id})
        stream = sorted(
            (r for (pid, _), r in self._records.items()
             if pid == project_id and (across_services or r.service == anchor.service)),
            key=lambda r: r.sort_key,
        )
        at = stream.index(anchor)
        return LogContext(anchor, stream[max(0, at - before) : at], stream[at + 1 : at + 1 + after])

    async def volume(self, query: VolumeQuery) -> list[CountBucket]:
        log_filter = query.filter
        counts = Counter(query.bucketing.floor(r.timestamp) for r in self._matching(log_filter))
        return [CountBucket(s, counts.get(s, 0)) for s in query.bucketing.starts_over(query.window)]

    async def export(self, log_filter: LogFilter, chunk: int = 1000) -> AsyncIterator[LogRecord]:
        for record in self._matching(log_filter):
            yield record

    async def ping(self) -> None:
        return None


def _passes(record: LogRecord, f: LogFilter, clauses: list[textsearch.Clause]) -> bool:
    if not f.window.contains(record.timestamp):
        return False
    if f.levels and record.level not in f.levels:
        return False
    if f.service is not None and record.service != f.service:
        return False
    if f.trace_id is not None and record.trace_id != f.trace_id:
        return False
    return not clauses or textsearch.matches(clauses, record.message)


class InMemoryLogMetadataStore:
    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], LogRecord] = {}
        self._stored_batches: set[str] = set()

    async def write_batches(self, batches: Sequence[LogBatch]) -> int:
        """Returns the rows written: a batch whose message id was stored before writes none
        (as the PostgreSQL store's inbox does). Text PostgreSQL could not store refuses the
        whole call with RecordsRejected, as its one transaction does."""
        for batch in batches:
            texts = (t for r in batch.records for t in (r.project_id, r.id, r.service))
            reason = first_problem(texts)
            if reason is not None:
                raise RecordsRejected(f"log batch {batch.message_id}: a record {reason}")
        written = 0
        for batch in batches:
            if batch.message_id in self._stored_batches:
                continue
            self._stored_batches.add(batch.message_id)
            for record in batch.records:
                self._rows[(record.project_id, record.id)] = record
            written += len(batch.records)
        return written

    async def drop_before(self, cutoff: datetime) -> list[str]:
        return _drop_before(self._rows, cutoff)

    async def count(self, project_id: str, window: TimeRange, level: LogLevel | None = None) -> int:
        return sum(
            1 for (pid, _), r in self._rows.items()
            if pid == project_id and window.contains(r.timestamp)
            and (level is None or r.level is level)
        )


def _drop_before(records: dict[tuple[str, str], LogRecord], cutoff: datetime) -> list[str]:
    boundary = utc_day_start(cutoff)
    doomed = [key for key, r in records.items() if r.timestamp < boundary]
    days = {records[key].timestamp.astimezone(UTC).date().isoformat() for key in doomed}
    for key in doomed:
        del records[key]
    return sorted(days)
