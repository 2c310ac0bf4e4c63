"""The alerting resources as the API answers them (rules with their state, notification
channels, incidents with timeline and deliveries): each shape declared once, a closed
TypedDict the OpenAPI document is generated from, beside the function that renders it (see
responses.py). A channel's secret is never shown and its target is redacted here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field
from typing_extensions import TypedDict

from opspilot.application.rendering import Aggregate, Instant, closed
from opspilot.domain import alerts
from opspilot.domain.alerts import (
    AlertRule,
    ChannelType,
    Comparator,
    DeliveryAttempt,
    IncidentStatus,
    RuleKind,
    RuleStatus,
    Severity,
)
from opspilot.domain.metrics import Aggregation
from opspilot.domain.timewindow import format_duration

# -- rules ---------------------------------------------------------------------------------


@closed
class RuleState(TypedDict):
    status: RuleStatus
    since: Annotated[Instant | None, Field(description="when the current status began")]
    incident_id: str | None
    last_value: Aggregate
    last_evaluated: Instant | None


def state_doc(state: alerts.RuleState | None) -> RuleState:
    if state is None:
        return {"status": RuleStatus.OK, "since": None, "incident_id": None, "last_value": None,
                "last_evaluated": None}
    return {"status": state.status, "since": state.since, "incident_id": state.incident_id,
            "last_value": state.last_value, "last_evaluated": state.last_evaluated}


@closed
class Rule(TypedDict):
    id: str
    name: str
    kind: RuleKind
    metric_name: str
    service_name: str | None
    tags: dict[str, str]
    aggregation: Aggregation
    comparator: Comparator
    threshold: float
    window: Annotated[str, Field(description="e.g. 5m")]
    for_duration: Annotated[str, Field(description='"0", or a duration such as 2m')]
    severity: Severity
    channels: list[str]
    enabled: bool
    created_at: Instant | None
    updated_at: Instant | None
    state: RuleState


def rule_doc(rule: AlertRule, state: alerts.RuleState | None = None) -> Rule:
    return {
        "id": rule.id, "name": rule.name, "kind": rule.kind,
        "metric_name": rule.metric_name, "service_name": rule.service_name,
        "tags": dict(rule.tags), "aggregation": rule.aggregation,
        "comparator": rule.comparator, "threshold": rule.threshold,
        "window": format_duration(rule.window),
        "for_duration": format_duration(rule.for_duration) if rule.for_duration else "0",
        "severity": rule.severity, "channels": list(rule.channels),
        "enabled": rule.enabled, "created_at": rule.created_at, "updated_at": rule.updated_at,
        "state": state_doc(state),
    }


@closed
class RuleList(TypedDict):
    rules: list[Rule]


def rules_doc(found: Sequence[tuple[AlertRule, alerts.RuleState | None]]) -> RuleList:
    return {"rules": [rule_doc(rule, state) for rule, state in found]}


# -- channels ------------------------------------------------------------------------------


@closed
class NotificationChannel(TypedDict):
    id: str
    name: str
    type: ChannelType
    target: Annotated[str, Field(description="without credentials, query string or Slack token")]
    has_secret: bool
    created_at: Instant | None


def redact_target(channel: alerts.Channel) -> str:
    if channel.type is ChannelType.EMAIL:
        return channel.target
    parts = urlsplit(channel.target)
    netloc = parts.netloc.rpartition("@")[2]
    path = parts.path
    if channel.type is ChannelType.SLACK and path.strip("/"):
        path = path.rstrip("/").rsplit("/", 1)[0] + "/****"
    return urlunsplit((parts.scheme, netloc, path, "****" if parts.query else "", ""))


def channel_doc(channel: alerts.Channel) -> NotificationChannel:
    return {"id": channel.id, "name": channel.name, "type": channel.type,
            "target": redact_target(channel), "has_secret": bool(channel.secret),
            "created_at": channel.created_at}


@closed
class ChannelList(TypedDict):
    channels: list[NotificationChannel]


def channels_doc(channels: Sequence[alerts.Channel]) -> ChannelList:
    return {"channels": [channel_doc(c) for c in channels]}


@closed
class ChannelTestResult(TypedDict):
    ok: bool
    detail: str
    at: Instant


def channel_test_doc(attempt: DeliveryAttempt) -> ChannelTestResult:
    return {"ok": attempt.ok, "detail": attempt.detail, "at": attempt.at}


# -- incidents -----------------------------------------------------------------------------


@closed
class TimelineEntry(TypedDict):
    at: Instant
    event: Annotated[str, Field(description="fired, acknowledged or resolved")]
    detail: str
    value: Aggregate


@closed
class Incident(TypedDict):
    id: str
    rule_id: str
    title: str
    severity: Severity
    status: IncidentStatus
    started_at: Instant
    acknowledged_at: Instant | None
    resolved_at: Instant | None
    values: Annotated[list[Aggregate], Field(description="the last observed values, oldest "
                                                         "first")]
    links: Annotated[dict[str, str], Field(description="name → API path to investigate with")]
    timeline: list[TimelineEntry]


def incident_doc(incident: alerts.Incident) -> Incident:
    return {
        "id": incident.id, "rule_id": incident.rule_id, "title": incident.title,
        "severity": incident.severity, "status": incident.status,
        "started_at": incident.started_at, "acknowledged_at": incident.acknowledged_at,
        "resolved_at": incident.resolved_at, "values": list(incident.values),
        "links": dict(incident.links),
        "timeline": [{"at": e.at, "event": e.event, "detail": e.detail, "value": e.value}
                     for e in incident.timeline],
    }


@closed
class Delivery(TypedDict):
    channel_id: str
    event: str
    attempt: int
    at: Instant
    ok: bool
    detail: str


def delivery_doc(attempt: DeliveryAttempt) -> Delivery:
    return {"channel_id": attempt.channel_id, "event": attempt.event,
            "attempt": attempt.attempt, "at": attempt.at, "ok": attempt.ok,
            "detail": attempt.detail}


@closed
class IncidentDetail(Incident):
    deliveries: list[Delivery]


def incident_detail_doc(incident: alerts.Incident,
                        deliveries: Sequence[DeliveryAttempt]) -> IncidentDetail:
    return {**incident_doc(incident), "deliveries": [delivery_doc(a) for a in deliveries]}


@closed
class IncidentList(TypedDict):
    incidents: Annotated[list[Incident], Field(description="newest first")]


def incidents_doc(found: Sequence[alerts.Incident]) -> IncidentList:
    return {"incidents": [incident_doc(i) for i in found]}
