"""PostgresLogMetadataStore: the plan's `log_metadata` rows, COPY'd with an inbox entry
(`logs:<message id>`) in the same transaction, so a redelivered batch writes nothing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from opspilot.domain.ingest import LogBatch, Stream
from opspilot.domain.logs import LogLevel
from opspilot.domain.timewindow import TimeRange

if TYPE_CHECKING:
    from opspilot.adapters.postgres.session import Database

COLUMNS = ("project_id", "log_id", "timestamp", "level", "service_name")
INBOX_PREFIX = "logs:"


class PostgresLogMetadataStore:
    """Implements LogMetadataStore. Raises TransientStoreError when PostgreSQL cannot answer."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def write_batches(self, batches: Sequence[LogBatch]) -> int:
        """Returns the rows written (0 for batches stored before)."""
        records: dict[str, list[tuple[Any, ...]]] = {}
        for batch in batches:
            records.setdefault(INBOX_PREFIX + batch.message_id, [
                (r.project_id, r.id, r.timestamp, r.level.value, r.service)
                for r in batch.records
            ])
        return await self._db.copy_once("log_metadata", COLUMNS, Stream.LOGS, records, 2)

    async def drop_before(self, cutoff: datetime) -> list[str]:
        return await self._db.drop_before("log_metadata", cutoff)

    async def count(
        self, project_id: str, window: TimeRange, level: LogLevel | None = None
    ) -> int:
        async with self._db.connection() as conn:
            found = await conn.fetchval(
                'SELECT count(*) FROM log_metadata WHERE project_id = $1'
                ' AND "timestamp" >= $2 AND "timestamp" < $3'
                " AND ($4::text IS NULL OR level = $4)",
                project_id, window.start, window.end, level.value if level else None,
            )
        return int(found)
