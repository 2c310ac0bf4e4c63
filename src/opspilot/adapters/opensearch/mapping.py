"""The log index: template, daily index names, and the record ⇄ document mapping.

Daily indices `<prefix>logs-YYYY.MM.DD` (UTC day of the record's timestamp) share one
composable index template and the alias `<prefix>logs`; reads go to the pattern
`<prefix>logs-*`, which answers empty (not 404) before the first write.

`timestamp` is the plan's `date` field (millisecond doc values: the volume histogram uses
it); `timestamp_us` holds the same instant as epoch microseconds and is what ordering,
cursors and time ranges use, because records keep microseconds and two records a few
microseconds apart must not tie. The `_source` keeps the ISO string with its original
offset, so a record reads back equal to the one written.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from opspilot.domain.logs import LogLevel, LogRecord

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
MESSAGE_KEYWORD_LIMIT = 512

# Kept in `_source`, never indexed: any keys, no mapping growth, no value ever refused.
# (`flat_object` would index it, but refuses the whole document when one value or key
# path exceeds Lucene's 32,766-byte term limit, and has no `ignore_above`: ADR 0006.)
CONTEXT_STORED_ONLY = {"type": "object", "enabled": False}


def index_pattern(prefix: str) -> str:
    return f"{prefix}logs-*"


def alias_name(prefix: str) -> str:
    return f"{prefix}logs"


def index_for(prefix: str, moment: datetime) -> str:
    return f"{prefix}logs-{moment.astimezone(UTC):%Y.%m.%d}"


def day_of_index(prefix: str, name: str) -> datetime | None:
    """The UTC day a daily index holds, or None when `name` is not one of ours."""
    match = re.fullmatch(re.escape(prefix) + r"logs-(\d{4})\.(\d{2})\.(\d{2})", name)
    if match is None:
        return None
    year, month, day = (int(part) for part in match.groups())
    try:
        return datetime(year, month, day, tzinfo=UTC)
    except ValueError:
        return None


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // MICROSECOND


def millis(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


def index_template(prefix: str, refresh_interval: str = "1s", shards: int = 1,
                   replicas: int = 0) -> dict[str, Any]:
    """The composable template. Its priority grows with the prefix length so that two
    installations whose patterns overlap (`a-logs-*`, `a-logs-b-logs-*`) never collide.

    `shards`/`replicas` (OPSPILOT_LOG_INDEX_SHARDS/_REPLICAS): 1/0 on one node; on a cluster
    of N data nodes, one primary per node and 1 replica, so losing a node loses no write
    (ADR 0028 has the sizing rule: ~10-50 GB per shard, daily indices)."""
    return {
        "index_patterns": [index_pattern(prefix)],
        "priority": 100 + len(prefix),
        "template": {
            "settings": {
                "number_of_shards": shards,
                "number_of_replicas": replicas,
                "refresh_interval": refresh_interval,
            },
            "aliases": {alias_name(prefix): {}},
            "mappings": {
                "dynamic": "false",
                "properties": {
                    "project_id": {"type": "keyword"},
                    "log_id": {"type": "keyword"},
                    "timestamp": {"type": "date"},
                    "timestamp_us": {"type": "long"},
                    "level": {"type": "keyword"},
                    "message": {
                        "type": "text",
                        "analyzer": "standard",
                        "fields": {
                            "keyword": {"type": "keyword", "ignore_above": MESSAGE_KEYWORD_LIMIT}
                        },
                    },
                    "service_name": {"type": "keyword"},
                    "trace_id": {"type": "keyword"},
                    "correlation_id": {"type": "keyword"},
                    "context": CONTEXT_STORED_ONLY,
                },
            },
        },
    }


def document_id(record: LogRecord) -> str:
    """Deterministic, and scoped to the project: a redelivery overwrites itself, and no
    project can ever overwrite another's record by reusing its id."""
    return f"{record.project_id}:{record.id}"


def to_document(record: LogRecord) -> dict[str, Any]:
    return {
        "project_id": record.project_id,
        "log_id": record.id,
        "timestamp": record.timestamp.isoformat(),
        "timestamp_us": micros(record.timestamp),
        "level": record.level.value,
        "message": record.message,
        "service_name": record.service,
        "trace_id": record.trace_id,
        "correlation_id": record.correlation_id,
        "context": dict(record.context),
    }


def from_source(source: dict[str, Any]) -> LogRecord:
    return LogRecord(
        id=source["log_id"],
        project_id=source["project_id"],
        timestamp=datetime.fromisoformat(source["timestamp"]),
        level=LogLevel(source["level"]),
        message=source["message"],
        service=source.get("service_name"),
        trace_id=source.get("trace_id"),
        correlation_id=source.get("correlation_id"),
        context=source.get("context") or {},
    )
