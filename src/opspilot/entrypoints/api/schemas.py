"""Request models: the single source of validation and of the OpenAPI document."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetPydanticSchema,
    StrictBool,
    StringConstraints,
    WithJsonSchema,
)
from pydantic_core import core_schema

from opspilot.domain.analysis import DEFAULT_ANOMALY_THRESHOLD
from opspilot.domain.ingest import MAX_BATCH_ITEMS
from opspilot.domain.logs import LEVEL_ALIASES, MAX_MESSAGE_LENGTH, LogLevel
from opspilot.domain.metrics import MAX_ABS_VALUE, MAX_TAGS, Aggregation
from opspilot.domain.storable import PRINTABLE_PATTERN, STORABLE_PATTERN
from opspilot.domain.timewindow import EARLIEST, LATEST

# The year as written: 1970-4999 (the instant, offset applied, must also lie in that range).
_TIMESTAMP_PREFIX = r"^(?:19[7-9][0-9]|[2-4][0-9]{3})-"
_DESCRIPTION = (
    f"ISO 8601 with a zone, from {EARLIEST.isoformat()} to before {LATEST.isoformat()}"
)


def _timestamp_schema(_source: Any, _handler: Any) -> core_schema.CoreSchema:
    """A string that starts with a year in range, then an aware datetime within
    [EARLIEST, LATEST): both steps in pydantic-core, no Python call per value (ingest
    validates up to 10,000 of these a request; a Python validator tripled its cost). Only a
    string: pydantic would otherwise read a JSON number, or a query string such as `0.5`,
    as Unix seconds."""
    text = core_schema.custom_error_schema(
        core_schema.str_schema(pattern=_TIMESTAMP_PREFIX),
        custom_error_type="timestamp_format",
        custom_error_message="not a timestamp in range: expected an ISO 8601 string such as"
                             f" 2024-01-01T12:00:00Z, {_DESCRIPTION[len('ISO 8601 with a zone, '):]}",
    )
    instant = core_schema.datetime_schema(tz_constraint="aware", ge=EARLIEST, lt=LATEST)
    return core_schema.chain_schema([text, instant])


Timestamp = Annotated[
    datetime,
    GetPydanticSchema(_timestamp_schema),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": _TIMESTAMP_PREFIX,
                    "description": _DESCRIPTION}),
]


def any_case(words: Iterable[str]) -> str:
    """An ECMA/Python regex alternative that matches each word in any letter case."""
    return "|".join(
        "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in word)
        for word in words
    )


_LEVEL = any_case([*(level.value for level in LogLevel), *LEVEL_ALIASES])
_AGGREGATION = any_case(a.value for a in Aggregation)
Level = Annotated[str, StringConstraints(pattern=f"^(?:{_LEVEL})$")]
# Query filter: one level or several, comma-separated (empty parts are ignored).
Levels = Annotated[str, StringConstraints(pattern=f"^ *(?:{_LEVEL})? *(?:, *(?:{_LEVEL})? *)*$")]
AggregationName = Annotated[str, StringConstraints(pattern=f"^(?:{_AGGREGATION})$")]


def storable(min_length: int = 0, max_length: int | None = None,
             strip: bool = False, name: bool = False) -> StringConstraints:
    """Free text that ends in PostgreSQL or OpenSearch: besides its length, what the stores
    can hold (domain/storable.py): no NUL; pydantic-core already refuses lone surrogates.
    Every free-text field of a request model takes its constraints from here."""
    return StringConstraints(min_length=min_length, max_length=max_length,
                             strip_whitespace=strip or None,
                             pattern=PRINTABLE_PATTERN if name else STORABLE_PATTERN)


Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,99}$")]
ServiceName = Annotated[str, storable(1, 100)]
TagKey = Annotated[str, storable(1, 100)]
TagValue = Annotated[str, storable(0, 200)]
MetricValue = Annotated[float, Field(allow_inf_nan=False, strict=True, ge=-MAX_ABS_VALUE,
                                     le=MAX_ABS_VALUE)]
Flag = StrictBool  # JSON true/false only: lax mode would read 0, 1 or "yes" as booleans
ShortText = Annotated[str, storable(1, 128)]
Duration = Annotated[str, StringConstraints(pattern=r"^[1-9]\d{0,5}[smhd]$")]
TagFilter = Annotated[str, storable()]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricIn(Strict):
    name: Name
    value: MetricValue
    timestamp: Timestamp
    service: ServiceName | None = None
    tags: dict[TagKey, TagValue] = Field(default_factory=dict, max_length=MAX_TAGS)


class MetricsIngestBody(Strict):
    metrics: list[MetricIn] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


class LogIn(Strict):
    level: Level
    message: Annotated[str, storable(1, MAX_MESSAGE_LENGTH)]
    timestamp: Timestamp
    service: ServiceName | None = None
    trace_id: ShortText | None = None
    correlation_id: ShortText | None = None
    context: dict[str, Any] = Field(default_factory=dict, max_length=64)


class LogsIngestBody(Strict):
    logs: list[LogIn] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


# The ingest timestamp rule (ingest.py): relative to the server's clock and the retention.
INGEST_TIME_RULE = ("every timestamp within the retention (OPSPILOT_METRIC_RETENTION_DAYS, "
                    "OPSPILOT_LOG_RETENTION_DAYS) and at most 10 minutes ahead of the "
                    "server's clock")


class Window(BaseModel):
    """Query-string time range; missing bounds default to the last hour."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    start_time: Timestamp | None = None
    end_time: Timestamp | None = None


class MetricQueryParams(Window):
    metric_name: Name
    service_name: ServiceName | None = None
    aggregation: AggregationName = "avg"
    time_bucket: Duration = "1m"
    tags: TagFilter | None = Field(default=None, description="key:value pairs, comma-separated")


DISCOVERY_LIMIT = 10_000


class DiscoveryWindow(Window):
    """Missing bounds default to the last 24 hours (what had a point then)."""

    limit: int = Field(default=1000, ge=1, le=DISCOVERY_LIMIT)


class ServiceListParams(DiscoveryWindow):
    metric_name: Name | None = Field(default=None, description="only this metric's services")


class TagListParams(DiscoveryWindow):
    metric_name: Name
    limit: int = Field(default=100, ge=1, le=1000, description="keys, and values per key")


class HistogramParams(Window):
    metric_name: Name
    service_name: ServiceName | None = None
    bins: int = Field(default=20, ge=1, le=200)
    tags: TagFilter | None = None


class AnomalyParams(Window):
    metric_name: Name
    service_name: ServiceName | None = None
    threshold: float = Field(default=DEFAULT_ANOMALY_THRESHOLD, gt=0, le=1, allow_inf_nan=False,
                             description="a calibrated score in (0, 1] (ADR 0012)")
    time_bucket: Duration = "1m"
    method: Literal["robust"] = "robust"
    tags: TagFilter | None = None


class OverlayMetric(Strict):
    name: Name
    service: ServiceName | None = None
    aggregation: AggregationName | None = None
    tags: dict[TagKey, TagValue] = Field(default_factory=dict, max_length=MAX_TAGS)


class OverlayBody(Strict):
    metrics: list[OverlayMetric] = Field(min_length=1, max_length=20)
    start_time: Timestamp
    end_time: Timestamp = Field(description="after start_time")
    time_bucket: Duration = "1m"
    aggregation: AggregationName = "avg"


class LogQueryParams(Window):
    level: Levels | None = Field(default=None, description="one level or several, comma-separated")
    service_name: ServiceName | None = None
    search: Annotated[str, storable(0, 1000)] | None = None
    trace_id: ShortText | None = None
    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=10_000)
    cursor: Annotated[str, storable(0, 500)] | None = None


class PatternParams(LogQueryParams):
    limit: int = Field(default=2000, ge=1, le=10_000)


class ContextParams(BaseModel):
    model_config = ConfigDict(extra="ignore")
    before: int = Field(default=10, ge=0, le=100)
    after: int = Field(default=10, ge=0, le=100)
    scope: Literal["service", "project"] = Field(
        default="service", description="neighbours of the same service, or of every service")


class VolumeParams(Window):
    time_bucket: Duration = "5m"
    level: Levels | None = Field(default=None, description="one level or several, comma-separated")
    service_name: ServiceName | None = None
    search: Annotated[str, storable(0, 1000)] | None = Field(
        default=None, description="the same syntax as /api/logs/query")
    trace_id: ShortText | None = None


class SpikeParams(Window):
    time_bucket: Duration = "1m"
    service_name: ServiceName | None = None


# No white space and no control characters (which PostgreSQL may not store, NUL, or which
# would break a mail header, CR/LF): the fuzzing on PostgreSQL found a NUL made this a 500.
Email = Annotated[str, StringConstraints(
    min_length=3, max_length=254, pattern=r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+$")]


class CreateProjectBody(Strict):
    # No control characters, the rule of every name, in the schema (it used to be a Python
    # check the schema did not state: schema-valid names were refused).
    name: Annotated[str, storable(1, 100, strip=True, name=True)]
    owner: Email | None = Field(
        default=None, description="the first owner's e-mail (created when new); by default "
        "the caller, or for the admin token a new user owner@<name>")


def parse_tags(text: str | None) -> dict[str, str]:
    """`key:value,key2:value2` → dict; raises ValueError on a malformed pair."""
    if not text:
        return {}
    pairs = {}
    for part in text.split(","):
        key, sep, value = part.partition(":")
        if not sep or not key.strip():
            raise ValueError(f"tag filter {part!r} is not key:value")
        pairs[key.strip()] = value.strip()
    return pairs


