"""Accepting ingest requests: stamp a batch id, attach the key's project, publish.

Drafts arrive validated by the entry point without a project (the API key decides it) and,
for logs, without ids: log ids are `<batch id>-<position>`, so a redelivered batch
overwrites itself wherever it is stored.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from opspilot.domain.ingest import Accepted, LogBatch, MetricBatch
from opspilot.domain.logs import LogRecord, log_id_for
from opspilot.domain.metrics import MetricPoint
from opspilot.domain.ports import Clock, IdGenerator, IngestQueue
from opspilot.domain.tenancy import IngestIdentity


class IngestService:
    def __init__(self, queue: IngestQueue, clock: Clock, ids: IdGenerator) -> None:
        self._queue = queue
        self._clock = clock
        self._ids = ids

    async def accept_metrics(
        self, identity: IngestIdentity, drafts: Sequence[MetricPoint]
    ) -> Accepted:
        message_id = self._ids.new_id()
        points = [attrs.evolve(d, project_id=identity.project_id) for d in drafts]
        batch = MetricBatch(message_id, identity.project_id, self._clock.now(), points)
        await self._queue.publish(batch)
        return Accepted(message_id, len(points))

    async def accept_logs(self, identity: IngestIdentity, drafts: Sequence[LogRecord]) -> Accepted:
        message_id = self._ids.new_id()
        records = [
            attrs.evolve(d, id=log_id_for(message_id, i), project_id=identity.project_id)
            for i, d in enumerate(drafts)
        ]
        batch = LogBatch(message_id, identity.project_id, self._clock.now(), records)
        await self._queue.publish(batch)
        return Accepted(message_id, len(records))
