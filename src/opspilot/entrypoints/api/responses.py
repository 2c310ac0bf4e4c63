"""Success answers: `json_answer`, the one way a handler writes a JSON body, and the models
that describe every operation's success body in the OpenAPI document.

The handlers build their answers as plain dicts (application/rendering.py, the route
modules) and never pass them through these models; these describe those dicts exactly as
they are serialised today, so that generated clients and the fuzz test's
`response_schema_conformance` check have something to hold them to. Every object is closed
(`additionalProperties: false`): each one is a fixed dict literal in the code, so a field
that appears without being documented here is a mistake the unit tests catch
(tests/unit/api/test_response_schemas.py). Free-form maps (tags, a log's context, an
incident's links, readiness checks) stay open.

Serialisation facts these follow: datetimes become RFC 3339 strings (orjson or
`isoformat()`, always with an offset); a non-finite float (an overflowing sum) becomes
`null` (orjson), so aggregated numbers are nullable.
"""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from opspilot.application.rendering import to_json
from opspilot.domain.alerts import (
    ChannelType,
    Comparator,
    IncidentStatus,
    RuleKind,
    RuleStatus,
    Severity,
)
from opspilot.domain.analysis import AnomalyMethod
from opspilot.domain.logs import LogLevel
from opspilot.domain.metrics import Aggregation
from opspilot.domain.tenancy import KeyScope, Role

Instant = AwareDatetime  # {"type": "string", "format": "date-time"}
# A float that an overflow may have made non-finite, which the encoder writes as null.
Aggregate = float | None


def json_answer(doc: Any, status: int = 200) -> web.Response:
    """A JSON answer, compact and encoded by orjson (`to_json`) like the cached metric
    answers, which arrive here already encoded (bytes are sent as they are)."""
    body = doc if isinstance(doc, bytes) else to_json(doc)
    return web.Response(body=body, status=status, content_type="application/json")


# -- models --------------------------------------------------------------------------------


def _absent_not_null(schema: dict[str, Any]) -> None:
    """For a field the server either writes with a value or leaves out (never null)."""
    schema.pop("default", None)
    branches = [b for b in schema.pop("anyOf", ()) if b != {"type": "null"}]
    if len(branches) == 1:
        schema.update(branches[0])


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- ingest, system ------------------------------------------------------------------------


class IngestAccepted(Closed):
    """202: the batch is durably queued; workers write it shortly after."""

    accepted: int = Field(description="items accepted (all of the request's)")
    batch_id: str = Field(description="id of the queued batch; log ids start with it")


class Health(Closed):
    status: Literal["ok"]


class Readiness(Closed):
    """200 when every check is "ok", else 503 with the same shape."""

    status: Literal["ready", "degraded", "unready"]
    checks: dict[str, str] = Field(
        description='adapter → "ok" or "failed: <reason>"'
    )


class ProjectCredentials(Closed):
    """Shown once: only hashes of the API key and token are stored."""

    project_id: str
    name: str
    api_key: str = Field(description="for X-API-Key on ingest")
    token: str | None = Field(description="the owner's bearer token for queries (null when "
                              "the owner is the caller, who has one)")
    owner_id: str


class UserCreated(Closed):
    id: str
    email: str
    admin: bool
    token: str = Field(description="the user's first bearer token, shown once")


class Member(Closed):
    user_id: str
    email: str
    role: Role


class MemberList(Closed):
    members: list[Member]


class MemberInvited(Member):
    token: str | None = Field(description="a first bearer token when the invitation created "
                              "the user (shown once), else null")


class TokenInfo(Closed):
    id: str
    name: str
    prefix: str = Field(description="the secret's first characters, to tell tokens apart")
    created_at: Instant
    expires_at: Instant | None
    status: Literal["active", "expired", "revoked"]


class TokenList(Closed):
    tokens: list[TokenInfo]


class TokenCreated(TokenInfo):
    token: str = Field(description="the secret, shown once")


class KeyInfo(Closed):
    id: str
    name: str
    scope: KeyScope
    prefix: str = Field(description="the secret's first characters, to tell keys apart")
    created_at: Instant
    expires_at: Instant | None = Field(description="set on a rotated key: its grace ends then")
    last_used_at: Instant | None = Field(description="to the minute")
    status: Literal["active", "grace", "expired", "revoked"]


class KeyList(Closed):
    keys: list[KeyInfo]


class KeyCreated(KeyInfo):
    api_key: str = Field(description="the secret, shown once")


class AuditEntry(Closed):
    id: str
    at: Instant
    actor: str = Field(description="a user id, or `operator` (admin token or CLI)")
    action: str
    target: str
    details: dict[str, str]


class AuditLog(Closed):
    events: list[AuditEntry] = Field(description="newest first")


# -- metrics -------------------------------------------------------------------------------


class SeriesPoint(Closed):
    timestamp: Instant = Field(description="start of the bucket")
    value: Aggregate = Field(description="the aggregate; null if it overflowed")
    count: int = Field(description="points in the bucket")


class MetricSeries(Closed):
    """One bucketed series; buckets without points are left out (ascending time)."""

    metric_name: str
    service_name: str | None
    aggregation: Aggregation
    time_bucket: str = Field(description="the bucket width, e.g. 1m")
    points: list[SeriesPoint]


class MetricOverlay(Closed):
    series: list[MetricSeries] = Field(description="one per requested metric, in order")


class MetricNames(Closed):
    names: list[str] = Field(description="metrics with a point in the window, ascending")
    truncated: bool = Field(description="true when `limit` cut the list short")


class MetricServices(Closed):
    metric_name: str | None = Field(description="the metric asked about, or null for all")
    services: list[str] = Field(description="ascending")
    truncated: bool


class TagValues(Closed):
    key: str
    values: list[str] = Field(description="ascending")


class MetricTags(Closed):
    metric_name: str
    tags: list[TagValues] = Field(description="by key, ascending")
    truncated: bool = Field(description="true when `limit` cut keys or values short")


class MeProject(Closed):
    id: str
    name: str
    role: Role = Field(description="what the user may do there (docs/security.md)")


class Me(Closed):
    """Who the bearer token is: its user and the projects it may query."""

    user_id: str
    projects: list[MeProject] = Field(description="by name; use an id as X-Project-ID")


class HistogramBin(Closed):
    lower: float
    upper: float
    count: int


class MetricHistogram(Closed):
    metric_name: str
    total: int = Field(description="points in the window")
    min: float | None = Field(description="null when there are no points")
    max: float | None = Field(description="null when there are no points")
    bins: list[HistogramBin] = Field(description="empty when there are no points")


class AnomalyPoint(Closed):
    timestamp: Instant
    value: float = Field(description="the bucket's average")
    score: float = Field(ge=0, le=1, description="calibrated anomaly score, at least the "
                                                 "threshold (ADR 0012)")
    deviation: float = Field(description="signed, in long-run error scales from the expected "
                                         "value")
    expected: float | None = Field(description="null where the detector has too little history")


class MetricAnomalies(Closed):
    metric_name: str
    service_name: str | None
    method: AnomalyMethod
    threshold: float
    time_bucket: str
    points: int = Field(description="buckets analysed")
    anomalies: list[AnomalyPoint]


# -- logs ----------------------------------------------------------------------------------


class LogEntry(Closed):
    id: str
    timestamp: Instant
    level: LogLevel
    message: str
    service_name: str | None
    trace_id: str | None
    correlation_id: str | None
    context: dict[str, Any]


class LogPage(Closed):
    logs: list[LogEntry] = Field(description="newest first")
    total: int = Field(description="matches in all (capped by the store's exact-count limit)")
    limit: int
    offset: int
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null on the last page"
    )


class LogContext(Closed):
    log: LogEntry
    before: list[LogEntry] = Field(description="oldest first")
    after: list[LogEntry] = Field(description="oldest first")


class VolumeBucket(Closed):
    timestamp: Instant
    count: int


class LogVolume(Closed):
    time_bucket: str
    total: int
    buckets: list[VolumeBucket]


class SpikeBucket(Closed):
    timestamp: Instant
    count: int
    baseline: float = Field(description="median count of the previous buckets")
    score: float = Field(description="robust score, rounded to 3 decimals")
    spike: bool


class ErrorSpikes(Closed):
    time_bucket: str
    method: str = Field(description="how a bucket is judged a spike, in words")
    buckets: list[SpikeBucket]
    spikes: int = Field(description="buckets flagged as spikes")


class LogPattern(Closed):
    pattern: str = Field(description="the template, variable parts masked")
    count: int
    levels: dict[str, int] = Field(description="level → logs of this pattern")
    samples: list[str]
    # Only when the analyzer is asked for members, which this API never does: then the
    # field is absent, never null.
    members: list[int] | None = Field(
        default=None, description="positions of the analysed logs; absent here",
        json_schema_extra=lambda schema: _absent_not_null(schema),
    )


class LogPatterns(Closed):
    logs_analyzed: int
    patterns: list[LogPattern]


# -- alerting ------------------------------------------------------------------------------


class RuleState(Closed):
    status: RuleStatus
    since: Instant | None = Field(description="when the current status began")
    incident_id: str | None
    last_value: Aggregate
    last_evaluated: Instant | None


class Rule(Closed):
    id: str
    name: str
    kind: RuleKind
    metric_name: str
    service_name: str | None
    tags: dict[str, str]
    aggregation: Aggregation
    comparator: Comparator
    threshold: float
    window: str = Field(description="e.g. 5m")
    for_duration: str = Field(description='"0", or a duration such as 2m')
    severity: Severity
    channels: list[str]
    enabled: bool
    created_at: Instant | None
    updated_at: Instant | None
    state: RuleState


class RuleList(Closed):
    rules: list[Rule]


class NotificationChannel(Closed):
    id: str
    name: str
    type: ChannelType
    target: str = Field(description="without credentials, query string or Slack token")
    has_secret: bool
    created_at: Instant | None


class ChannelList(Closed):
    channels: list[NotificationChannel]


class ChannelTestResult(Closed):
    ok: bool
    detail: str
    at: Instant


class TimelineEntry(Closed):
    at: Instant
    event: str = Field(description="fired, acknowledged or resolved")
    detail: str
    value: Aggregate


class Incident(Closed):
    id: str
    rule_id: str
    title: str
    severity: Severity
    status: IncidentStatus
    started_at: Instant
    acknowledged_at: Instant | None
    resolved_at: Instant | None
    values: list[Aggregate] = Field(description="the last observed values, oldest first")
    links: dict[str, str] = Field(description="name → API path to investigate with")
    timeline: list[TimelineEntry]


class Delivery(Closed):
    channel_id: str
    event: str
    attempt: int
    at: Instant
    ok: bool
    detail: str


class IncidentDetail(Incident):
    deliveries: list[Delivery]


class IncidentList(Closed):
    incidents: list[Incident] = Field(description="newest first")
