"""Request models: the single source of validation and of the OpenAPI document."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from opspilot.domain.ingest import MAX_BATCH_ITEMS
from opspilot.domain.logs import MAX_MESSAGE_LENGTH
from opspilot.domain.metrics import MAX_TAGS

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,99}$")]
ServiceName = Annotated[str, StringConstraints(min_length=1, max_length=100)]
Finite = Annotated[float, Field(allow_inf_nan=False, strict=True)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Duration = Annotated[str, StringConstraints(pattern=r"^\d{1,6}[smhd]$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricIn(Strict):
    name: Name
    value: Finite
    timestamp: AwareDatetime
    service: ServiceName | None = None
    tags: dict[Annotated[str, StringConstraints(min_length=1, max_length=100)],
               Annotated[str, StringConstraints(max_length=200)]] = Field(
        default_factory=dict, max_length=MAX_TAGS
    )


class MetricsIngestBody(Strict):
    metrics: list[MetricIn] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


class LogIn(Strict):
    level: Annotated[str, StringConstraints(min_length=1, max_length=10)]
    message: Annotated[str, StringConstraints(min_length=1, max_length=MAX_MESSAGE_LENGTH)]
    timestamp: AwareDatetime
    service: ServiceName | None = None
    trace_id: ShortText | None = None
    correlation_id: ShortText | None = None
    context: dict[str, Any] = Field(default_factory=dict, max_length=64)


class LogsIngestBody(Strict):
    logs: list[LogIn] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


class Window(BaseModel):
    """Query-string time range; missing bounds default to the last hour."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    start_time: AwareDatetime | None = None
    end_time: AwareDatetime | None = None


class MetricQueryParams(Window):
    metric_name: Name
    service_name: ServiceName | None = None
    aggregation: str = "avg"
    time_bucket: Duration = "1m"
    tags: str | None = Field(default=None, description="key:value pairs, comma-separated")


class HistogramParams(Window):
    metric_name: Name
    service_name: ServiceName | None = None
    bins: int = Field(default=20, ge=1, le=200)
    tags: str | None = None


class AnomalyParams(Window):
    metric_name: Name
    service_name: ServiceName | None = None
    threshold: float = Field(default=3.0, gt=0, le=100, allow_inf_nan=False)
    time_bucket: Duration = "1m"
    method: Literal["z-score", "robust", "isolation_forest"] = "robust"
    tags: str | None = None


class OverlayMetric(Strict):
    name: Name
    service: ServiceName | None = None
    aggregation: str | None = None
    tags: dict[str, str] = Field(default_factory=dict, max_length=MAX_TAGS)


class OverlayBody(Strict):
    metrics: list[OverlayMetric] = Field(min_length=1, max_length=20)
    start_time: AwareDatetime
    end_time: AwareDatetime
    time_bucket: Duration = "1m"
    aggregation: str = "avg"


class LogQueryParams(Window):
    level: str | None = Field(default=None, description="one level or several, comma-separated")
    service_name: ServiceName | None = None
    search: Annotated[str, StringConstraints(max_length=1000)] | None = None
    trace_id: ShortText | None = None
    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=10_000)
    cursor: Annotated[str, StringConstraints(max_length=500)] | None = None


class PatternParams(LogQueryParams):
    limit: int = Field(default=2000, ge=1, le=10_000)


class ContextParams(BaseModel):
    model_config = ConfigDict(extra="ignore")
    before: int = Field(default=10, ge=0, le=100)
    after: int = Field(default=10, ge=0, le=100)


class VolumeParams(Window):
    time_bucket: Duration = "5m"
    level: str | None = None
    service_name: ServiceName | None = None


class SpikeParams(Window):
    time_bucket: Duration = "1m"
    service_name: ServiceName | None = None


class CreateProjectBody(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True)]

    @field_validator("name")
    @classmethod
    def printable(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError("must be printable")
        return value


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


