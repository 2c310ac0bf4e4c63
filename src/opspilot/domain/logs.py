"""Log records, the viewer's queries, and the rule that flags an error spike."""

from __future__ import annotations

import base64
import binascii
import enum
import json
import statistics
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from opspilot.domain.errors import ValidationError
from opspilot.domain.timewindow import Bucketing, TimeRange, require_aware

MAX_MESSAGE_LENGTH = 32_768
MAX_PAGE_SIZE = 1_000
MAX_OFFSET = 10_000  # past this, page with the cursor (search_after)
CONTEXT_MAX = 100


# Other spellings LogLevel.parse accepts (in any letter case), and the level each one means.
LEVEL_ALIASES = {"WARNING": "WARN", "CRITICAL": "FATAL", "ERR": "ERROR"}


class LogLevel(enum.StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARN = "WARN"
    ERROR = "ERROR"
    FATAL = "FATAL"

    @classmethod
    def parse(cls, text: str, field: str = "level") -> LogLevel:
        normalised = text.strip().upper()
        normalised = LEVEL_ALIASES.get(normalised, normalised)
        try:
            return cls(normalised)
        except ValueError:
            allowed = ", ".join(level.value for level in cls)
            raise ValidationError(field, f"unknown level {text!r}; one of {allowed}") from None


@attrs.frozen
class LogRecord:
    """One log line. `id` is deterministic (ingest message id + position) so redelivery
    of the same batch overwrites instead of duplicating."""

    id: str
    project_id: str
    timestamp: datetime
    level: LogLevel
    message: str
    service: str | None = None
    trace_id: str | None = None
    correlation_id: str | None = None
    context: Mapping[str, Any] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        require_aware(self.timestamp, "timestamp")

    @property
    def sort_key(self) -> tuple[datetime, str]:
        return (self.timestamp, self.id)


def log_id_for(message_id: str, position: int) -> str:
    return f"{message_id}-{position:05d}"


@attrs.frozen
class Cursor:
    """Where the next page starts: strictly older than (timestamp, id) in (timestamp desc,
    id desc) order. Opaque to clients (urlsafe base64 of JSON)."""

    timestamp: datetime
    log_id: str

    def encode(self) -> str:
        raw = json.dumps([self.timestamp.isoformat(), self.log_id]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, field: str = "cursor") -> Cursor:
        try:
            padded = text + "=" * (-len(text) % 4)
            stamp, log_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
            moment = datetime.fromisoformat(stamp)
        except (ValueError, TypeError, binascii.Error, json.JSONDecodeError):
            raise ValidationError(field, "not a cursor this server issued") from None
        return cls(require_aware(moment, field), str(log_id))


@attrs.frozen
class LogFilter:
    """What the viewer's filters select; `search` is plain user text, never query syntax."""

    project_id: str
    window: TimeRange
    levels: tuple[LogLevel, ...] = ()
    service: str | None = None
    search: str | None = None
    trace_id: str | None = None


@attrs.frozen
class LogQuery:
    filter: LogFilter
    limit: int = 100
    offset: int = 0
    cursor: Cursor | None = None

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_PAGE_SIZE:
            raise ValidationError("limit", f"between 1 and {MAX_PAGE_SIZE}")
        if self.offset < 0:
            raise ValidationError("offset", "must not be negative")
        if self.cursor is None and self.offset + self.limit > MAX_OFFSET:
            raise ValidationError(
                "offset", f"offset+limit over {MAX_OFFSET}: use the cursor of the previous page"
            )
        if self.cursor is not None and self.offset:
            raise ValidationError("offset", "give either offset or cursor, not both")


@attrs.frozen
class LogPage:
    """One page of matches, newest first; `next_cursor` is None on the last page."""

    records: Sequence[LogRecord]
    total: int  # matches in all, capped by the store's exact-count limit
    next_cursor: Cursor | None


def next_cursor(records: Sequence[LogRecord], limit: int) -> Cursor | None:
    if len(records) < limit or not records:
        return None
    last = records[-1]
    return Cursor(last.timestamp, last.id)


@attrs.frozen
class LogContext:
    """A log (`anchor`) with the logs just before and after it in time."""

    anchor: LogRecord
    before: Sequence[LogRecord]  # oldest first
    after: Sequence[LogRecord]  # oldest first


@attrs.frozen
class VolumeQuery:
    project_id: str
    window: TimeRange
    bucketing: Bucketing
    levels: tuple[LogLevel, ...] = ()
    service: str | None = None
    search: str | None = None  # as LogFilter's: the volume of what a search shows
    trace_id: str | None = None

    @property
    def filter(self) -> LogFilter:
        return LogFilter(self.project_id, self.window, self.levels, self.service, self.search,
                         self.trace_id)


@attrs.frozen
class CountBucket:
    """How many logs a time bucket holds."""

    bucket: datetime
    count: int


@attrs.frozen
class SpikeBucket:
    """A bucket's error count against its trailing baseline; `spike` when it stands out."""

    bucket: datetime
    count: int
    baseline: float
    spread: float
    score: float
    spike: bool


SPIKE_METHOD = (
    "a bucket is a spike when its count exceeds the median of the previous {window} buckets "
    "by more than {threshold} robust sigmas (1.4826 × MAD, at least 1) and by at least "
    "{min_count} errors; the first buckets compare with whatever history they have"
)


def flag_spikes(
    counts: Sequence[CountBucket], window: int = 30, threshold: float = 3.0, min_count: int = 3
) -> list[SpikeBucket]:
    """Causal robust baseline: each bucket is compared only with the buckets before it."""
    flagged: list[SpikeBucket] = []
    for index, current in enumerate(counts):
        history = [c.count for c in counts[max(0, index - window) : index]]
        baseline = statistics.median(history) if history else 0.0
        mad = statistics.median([abs(h - baseline) for h in history]) if history else 0.0
        spread = max(1.4826 * mad, 1.0)
        score = (current.count - baseline) / spread
        spike = score > threshold and current.count - baseline >= min_count
        flagged.append(
            SpikeBucket(current.bucket, current.count, float(baseline), spread, score, spike)
        )
    return flagged
