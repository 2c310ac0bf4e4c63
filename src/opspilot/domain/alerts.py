"""Alert rules, their state machine, incidents and notification channels.

A rule's state moves ok → pending (condition true, `for_duration` not yet met) → firing →
ok again (the incident resolves). Each transition is recorded as an event that the
application dispatches (open an incident, notify, resolve).
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import attrs

from opspilot.domain.errors import Conflict, ValidationError
from opspilot.domain.metrics import Aggregation


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
