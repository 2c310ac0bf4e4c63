"""Alert rules, their state machine, incidents and notification channels.

A rule's state moves ok → pending (condition true, `for_duration` not yet met) → firing →
ok again (the incident resolves). Each transition is recorded as an event that the
application dispatches (open an incident, notify, resolve).
"""

from __future__ import annotations

import enum
import operator
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import attrs

from opspilot.domain.analysis import DEFAULT_ANOMALY_THRESHOLD
from opspilot.domain.errors import Conflict, ValidationError
from opspilot.domain.metrics import Aggregation
from opspilot.domain.timewindow import format_duration


class RuleKind(enum.StrEnum):
    THRESHOLD = "threshold"
    NO_DATA = "no_data"
    ANOMALY = "anomaly"


class Comparator(enum.StrEnum):
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"

    def holds(self, value: float, threshold: float) -> bool:
        compare: Callable[[float, float], bool] = {
            "gt": operator.gt,
            "gte": operator.ge,
            "lt": operator.lt,
            "lte": operator.le,
        }[self.value]
        return compare(value, threshold)


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class RuleStatus(enum.StrEnum):
    OK = "ok"
    PENDING = "pending"
    FIRING = "firing"


@attrs.frozen
class AlertRule:
    """A stored rule: fire when `aggregation` of the metric over `window` compares
    true with `threshold` for `for_duration` (or, for anomaly and no-data kinds, as named)."""

    id: str
    project_id: str
    name: str
    kind: RuleKind
    metric_name: str
    window: timedelta
    service_name: str | None = None
    tags: Mapping[str, str] = attrs.field(factory=dict)
    aggregation: Aggregation = Aggregation.AVG
    comparator: Comparator = Comparator.GT
    threshold: float = 0.0
    for_duration: timedelta = timedelta(0)
    severity: Severity = Severity.WARNING
    channels: tuple[str, ...] = ()
    enabled: bool = True
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def __attrs_post_init__(self) -> None:
        if not self.name.strip() or len(self.name) > 200:
            raise ValidationError("name", "1-200 characters")
        if self.window <= timedelta(0) or self.window > timedelta(days=1):
            raise ValidationError("window", "between 1s and 1d")
        if self.for_duration < timedelta(0) or self.for_duration > timedelta(days=1):
            raise ValidationError("for_duration", "between 0s and 1d")


@attrs.frozen
class Observation:
    """What one evaluation saw: the aggregated value (None = no data) and whether the
    rule's condition held."""

    at: datetime
    value: float | None
    breached: bool
    detail: str = ""


def condition_breached(rule: AlertRule, value: float | None) -> bool:
    if rule.kind is RuleKind.NO_DATA:
        return value is None
    if value is None:
        return False
    return rule.comparator.holds(value, rule.threshold)


@attrs.frozen
class RuleState:
    """Where a rule stands after its last evaluation, and its open incident if any."""

    rule_id: str
    project_id: str
    status: RuleStatus = RuleStatus.OK
    since: datetime | None = None  # when the current status began
    incident_id: str | None = None
    last_value: float | None = None
    last_evaluated: datetime | None = None


class TransitionKind(enum.StrEnum):
    PENDING = "pending"
    FIRED = "fired"
    RESOLVED = "resolved"
    CLEARED = "cleared"  # pending that never fired


@attrs.frozen
class Transition:
    kind: TransitionKind
    rule_id: str
    at: datetime
    value: float | None


def advance(
    state: RuleState, rule: AlertRule, seen: Observation
) -> tuple[RuleState, Transition | None]:
    """The pure state machine. Evaluating the same observation twice changes nothing."""
    if state.last_evaluated is not None and seen.at <= state.last_evaluated:
        return state, None
    observed = attrs.evolve(state, last_value=seen.value, last_evaluated=seen.at)
    if seen.breached:
        return _advance_breached(observed, rule, seen)
    if state.status is RuleStatus.OK:
        return observed, None
    kind = TransitionKind.RESOLVED if state.status is RuleStatus.FIRING else TransitionKind.CLEARED
    cleared = attrs.evolve(observed, status=RuleStatus.OK, since=seen.at, incident_id=None)
    return cleared, Transition(kind, rule.id, seen.at, seen.value)


def _advance_breached(
    state: RuleState, rule: AlertRule, seen: Observation
) -> tuple[RuleState, Transition | None]:
    if state.status is RuleStatus.FIRING:
        return state, None
    since = state.since if state.status is RuleStatus.PENDING and state.since else seen.at
    if seen.at - since >= rule.for_duration:
        firing = attrs.evolve(state, status=RuleStatus.FIRING, since=seen.at)
        return firing, Transition(TransitionKind.FIRED, rule.id, seen.at, seen.value)
    if state.status is RuleStatus.PENDING:
        return state, None
    pending = attrs.evolve(state, status=RuleStatus.PENDING, since=seen.at)
    return pending, Transition(TransitionKind.PENDING, rule.id, seen.at, seen.value)


class IncidentStatus(enum.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


@attrs.frozen
class TimelineEntry:
    """One event of an incident's life (fired, observed, acknowledged, resolved)."""

    at: datetime
    event: str
    detail: str = ""
    value: float | None = None


@attrs.frozen
class Incident:
    """What a firing rule opens; resolved when the condition clears or by hand."""

    id: str
    project_id: str
    rule_id: str
    title: str
    severity: Severity
    status: IncidentStatus
    started_at: datetime
    timeline: tuple[TimelineEntry, ...] = ()
    values: tuple[float, ...] = ()
    links: Mapping[str, str] = attrs.field(factory=dict)
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None

    @classmethod
    def opened(cls, rule: AlertRule, at: datetime, seen: Observation) -> Incident:
        """The incident of the firing episode that began at `at`. Its id is derived from
        the rule and that instant, so evaluating the same tick twice (a redelivered chunk)
        builds the same incident, never a second one."""
        return cls(
            id=incident_id_for(rule.id, at),
            project_id=rule.project_id,
            rule_id=rule.id,
            title=f"{rule.name}: {describe_condition(rule)}",
            severity=rule.severity,
            status=IncidentStatus.OPEN,
            started_at=at,
            timeline=(TimelineEntry(at, "fired", seen.detail, seen.value),),
            values=() if seen.value is None else (seen.value,),
            links=investigation_links(rule, at),
        )

    def acknowledge(self, at: datetime, by: str) -> Incident:
        if self.status is IncidentStatus.RESOLVED:
            raise Conflict("incident is already resolved", {"field": "status"})
        if self.status is IncidentStatus.ACKNOWLEDGED:
            return self
        return attrs.evolve(
            self,
            status=IncidentStatus.ACKNOWLEDGED,
            acknowledged_at=at,
            timeline=(*self.timeline, TimelineEntry(at, "acknowledged", by)),
        )

    def resolve(self, at: datetime, reason: str) -> Incident:
        if self.status is IncidentStatus.RESOLVED:
            return self
        return attrs.evolve(
            self,
            status=IncidentStatus.RESOLVED,
            resolved_at=at,
            timeline=(*self.timeline, TimelineEntry(at, "resolved", reason)),
        )

    def observe(self, at: datetime, value: float | None) -> Incident:
        if value is None:
            return self
        return attrs.evolve(self, values=(*self.values[-99:], value))


class ChannelType(enum.StrEnum):
    WEBHOOK = "webhook"
    SLACK = "slack"
    EMAIL = "email"


@attrs.frozen
class Channel:
    """Where notifications go: a webhook or Slack URL, or an email address."""

    id: str
    project_id: str
    name: str
    type: ChannelType
    # URL for webhook/slack (may carry a token: never in a repr, hence never in a log line),
    # address for email
    target: str = attrs.field(repr=lambda _: "<redacted>")
    secret: str | None = attrs.field(default=None, repr=lambda _: "<redacted>")
    created_at: datetime | None = None


@attrs.frozen
class Notification:
    """What a channel is told: an incident fired or resolved (or a test)."""

    event: str  # "fired" | "resolved" | "test"
    project_id: str
    incident_id: str | None
    rule_id: str | None
    title: str
    severity: str
    value: float | None
    at: datetime
    links: Mapping[str, str] = attrs.field(factory=dict)

    def as_payload(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "project_id": self.project_id,
            "incident_id": self.incident_id,
            "rule_id": self.rule_id,
            "title": self.title,
            "severity": self.severity,
            "value": self.value,
            "at": self.at.isoformat(),
            "links": dict(self.links),
        }


@attrs.frozen
class DeliveryAttempt:
    """One try to notify a channel, and whether it arrived."""

    channel_id: str
    incident_id: str | None
    event: str
    attempt: int
    at: datetime
    ok: bool
    detail: str = ""


# -- what an incident says about its rule ------------------------------------------------------

_INCIDENT_NAMESPACE = uuid.UUID("5b0c8f5e-54a4-4f7e-9a55-2f1f3c0e6a11")


def incident_id_for(rule_id: str, fired_at: datetime) -> str:
    return str(uuid.uuid5(_INCIDENT_NAMESPACE, f"{rule_id}|{fired_at.isoformat()}"))


def anomaly_threshold(rule: AlertRule) -> float:
    """The rule's score threshold. Rules stored before scores existed hold sigmas (> 1,
    e.g. 3): no score reaches them, so they are judged at the default score instead of
    never firing; saving such a rule again asks for a score."""
    return rule.threshold if rule.threshold <= 1 else DEFAULT_ANOMALY_THRESHOLD


def describe_condition(rule: AlertRule) -> str:
    series = f"{rule.aggregation.value}({_series_label(rule)})"
    over = f"over {format_duration(rule.window)}"
    if rule.kind is RuleKind.NO_DATA:
        return f"no data for {_series_label(rule)} {over}"
    if rule.kind is RuleKind.ANOMALY:
        return (f"{series} per {format_duration(rule.window)} is anomalous "
                f"(score ≥ {anomaly_threshold(rule):g})")
    symbol = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[rule.comparator.value]
    return f"{series} {symbol} {rule.threshold:g} {over}"


def _series_label(rule: AlertRule) -> str:
    filters = ([f"service={rule.service_name}"] if rule.service_name else []) + [
        f"{k}={v}" for k, v in sorted(rule.tags.items())
    ]
    return rule.metric_name + (f"{{{','.join(filters)}}}" if filters else "")


def investigation_links(rule: AlertRule, at: datetime) -> dict[str, str]:
    """Where to look: the metric around the incident's start, and the logs of its service."""
    context = max(timedelta(hours=1), rule.window * 6)
    bucket = "1m" if rule.window <= timedelta(hours=1) else "5m"
    if context > timedelta(days=2):
        bucket = "1h"
    metric: dict[str, str] = {
        "metric_name": rule.metric_name,
        "aggregation": rule.aggregation.value,
        "time_bucket": bucket,
        "start_time": (at - context).isoformat(),
        "end_time": (at + timedelta(hours=1)).isoformat(),
    }
    logs = {
        "start_time": (at - max(rule.window, timedelta(minutes=15))).isoformat(),
        "end_time": (at + timedelta(minutes=15)).isoformat(),
    }
    if rule.service_name:
        metric["service_name"] = logs["service_name"] = rule.service_name
    if rule.tags:
        metric["tags"] = ",".join(f"{k}:{v}" for k, v in sorted(rule.tags.items()))
    return {
        "metrics": f"/api/metrics/query?{urlencode(metric)}",
        "logs": f"/api/logs/query?{urlencode(logs)}",
    }
