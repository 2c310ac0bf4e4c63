"""What an accepted ingest request becomes on the queue: one batch with a stable id."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime

import attrs

from opspilot.domain.logs import LogRecord
from opspilot.domain.metrics import MetricMetadata, MetricPoint

MAX_BATCH_ITEMS = 10_000
MAX_BODY_BYTES = 10 * 1024 * 1024


class Stream(enum.StrEnum):
    METRICS = "metrics.ingest"
    LOGS = "logs.ingest"
    ALERTS = "alerts.evaluate"


@attrs.frozen
class MetricBatch:
    message_id: str
    project_id: str
    received_at: datetime
    points: Sequence[MetricPoint]
    metadata: Sequence[MetricMetadata] = ()  # families described by the request, if any


@attrs.frozen
class LogBatch:
    message_id: str
    project_id: str
    received_at: datetime
    records: Sequence[LogRecord]


@attrs.frozen
class Accepted:
    """An ingest request the queue holds durably: its batch id and how many items."""

    batch_id: str
    accepted: int
