"""Rules, channels and incidents: the management use cases the API and the library call."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import attrs

from opspilot.application.alerting.notification import NotificationDispatcher
from opspilot.application.channel_tests import ChannelTestCap
from opspilot.domain.alerts import (
    AlertRule,
    Channel,
    ChannelType,
    Comparator,
    DeliveryAttempt,
    Incident,
    IncidentStatus,
    Notification,
    RuleKind,
    RuleState,
    Severity,
)
from opspilot.domain.analysis import DEFAULT_ANOMALY_THRESHOLD, Analyzer
from opspilot.domain.errors import Conflict, NotFound, ValidationError
from opspilot.domain.metrics import Aggregation, check_name, check_tags
from opspilot.domain.ports import (
    ChannelStore,
    ChannelTargets,
    Clock,
    IdGenerator,
    IncidentStore,
    RuleStore,
)

_EMAIL = re.compile(r"^[^@\s,]+@[^@\s,]+$")
MAX_CHANNELS_PER_RULE = 10


@attrs.frozen
class RuleSpec:
    """What a user says about a rule (create, replace, or the base of a partial update)."""

    name: str
    metric_name: str
    kind: RuleKind = RuleKind.THRESHOLD
    window: timedelta = timedelta(minutes=5)
    service_name: str | None = None
    tags: Mapping[str, str] = attrs.field(factory=dict)
    aggregation: Aggregation = Aggregation.AVG
    comparator: Comparator = Comparator.GT
    threshold: float | None = None
    for_duration: timedelta = timedelta(0)
    severity: Severity = Severity.WARNING
    channels: tuple[str, ...] = ()
    enabled: bool = True


def spec_of(rule: AlertRule) -> RuleSpec:
    return RuleSpec(
        name=rule.name, metric_name=rule.metric_name, kind=rule.kind, window=rule.window,
        service_name=rule.service_name, tags=dict(rule.tags), aggregation=rule.aggregation,
        comparator=rule.comparator, threshold=rule.threshold, for_duration=rule.for_duration,
        severity=rule.severity, channels=rule.channels, enabled=rule.enabled,
    )


@attrs.frozen
class RuleView:
    """A rule with its current state (None before its first evaluation)."""

    rule: AlertRule
    state: RuleState | None


@attrs.frozen
class IncidentView:
    """An incident with every notification attempt made for it."""

    incident: Incident
    deliveries: tuple[DeliveryAttempt, ...]


class AlertRules:
    """Rules, channels and incidents of one project at a time. Every lookup is scoped to the
    project: another project's id answers NotFound, exactly like an id that does not exist."""

    def __init__(
        self,
        rules: RuleStore,
        channels: ChannelStore,
        incidents: IncidentStore,
        dispatcher: NotificationDispatcher,
        clock: Clock,
        ids: IdGenerator,
        analyzer: Analyzer | None = None,
        targets: ChannelTargets | None = None,
        test_cap: ChannelTestCap | None = None,
    ) -> None:
        self._rules = rules
        self._channels = channels
        self._incidents = incidents
        self._dispatcher = dispatcher
        self._clock = clock
        self._ids = ids
        self._analyzer = analyzer
        self._targets = targets  # None: targets are only checked at send
        self._test_cap = test_cap  # None: test sends are not capped

    # rules ---------------------------------------------------------------------------

    async def create_rule(self, project_id: str, spec: RuleSpec) -> AlertRule:
        now = self._clock.now()
        rule = await self._build(project_id, self._ids.new_id(), spec, now, now)
        await self._rules.save_rule(rule)
        return rule

    async def list_rules(self, project_id: str) -> list[RuleView]:
        rules = await self._rules.list_rules(project_id)
        states = await self._rules.get_states([r.id for r in rules])
        return [RuleView(r, states.get(r.id)) for r in rules]

    async def get_rule(self, project_id: str, rule_id: str) -> RuleView:
        rule = await self._rule(project_id, rule_id)
        states = await self._rules.get_states([rule.id])
        return RuleView(rule, states.get(rule.id))

    async def replace_rule(self, project_id: str, rule_id: str, spec: RuleSpec) -> AlertRule:
        old = await self._rule(project_id, rule_id)
        rule = await self._build(project_id, old.id, spec, old.created_at, self._clock.now())
        await self._rules.save_rule(rule)
        if old.enabled and not rule.enabled:
            await self._stand_down(rule, "rule disabled")
        return rule

    async def update_rule(
        self, project_id: str, rule_id: str, changes: Mapping[str, Any]
    ) -> AlertRule:
        """A partial update: the named fields change, the others keep their value."""
        old = await self._rule(project_id, rule_id)
        unknown = sorted(set(changes) - {f.name for f in attrs.fields(RuleSpec)})
        if unknown:
            raise ValidationError(unknown[0], "not a field of a rule")
        return await self.replace_rule(project_id, rule_id, attrs.evolve(spec_of(old), **changes))

    async def set_enabled(self, project_id: str, rule_id: str, enabled: bool) -> AlertRule:
        return await self.update_rule(project_id, rule_id, {"enabled": enabled})

    async def delete_rule(self, project_id: str, rule_id: str) -> None:
        rule = await self._rule(project_id, rule_id)
        await self._stand_down(rule, "rule deleted")
        await self._rules.delete_rule(project_id, rule_id)

    async def _rule(self, project_id: str, rule_id: str) -> AlertRule:
        rule = await self._rules.get_rule(project_id, rule_id)
        if rule is None:
            raise NotFound("no such rule", {"field": "rule_id", "rule_id": rule_id})
        return rule

    async def _stand_down(self, rule: AlertRule, reason: str) -> None:
        """A rule that stops being evaluated resolves its open incident and forgets its
        state, so that re-enabling it starts a fresh episode."""
        state = (await self._rules.get_states([rule.id])).get(rule.id)
        if state is None:
            return
        if state.incident_id is not None:
            incident = await self._incidents.get_incident(rule.project_id, state.incident_id)
            if incident is not None and incident.status is not IncidentStatus.RESOLVED:
                await self._incidents.save_incident(incident.resolve(self._clock.now(), reason))
        await self._rules.save_states([RuleState(rule.id, rule.project_id)])

    async def _build(
        self, project_id: str, rule_id: str, spec: RuleSpec,
        created_at: datetime | None, updated_at: datetime,
    ) -> AlertRule:
        check_name(spec.metric_name, "metric_name")
        tags = check_tags(spec.tags)
        threshold = self._threshold(spec)
        channels = await self._channel_ids(project_id, spec.channels)
        return AlertRule(
            id=rule_id, project_id=project_id, name=spec.name, kind=spec.kind,
            metric_name=spec.metric_name, window=spec.window, service_name=spec.service_name,
            tags=tags, aggregation=spec.aggregation, comparator=spec.comparator,
            threshold=threshold, for_duration=spec.for_duration, severity=spec.severity,
            channels=channels, enabled=spec.enabled, created_at=created_at,
            updated_at=updated_at,
        )

    def _threshold(self, spec: RuleSpec) -> float:
        if spec.kind is RuleKind.THRESHOLD:
            if spec.threshold is None:
                raise ValidationError("threshold", "threshold rules need a threshold")
            return spec.threshold
        if spec.kind is RuleKind.NO_DATA:
            return spec.threshold or 0.0
        if self._analyzer is None:
            raise ValidationError("kind", "anomaly rules need the analyzer; none is configured")
        # The analyzer's calibrated score (ADR 0012): one threshold means the same on
        # every series, and the API's /api/metrics/anomalies uses the same one.
        score = DEFAULT_ANOMALY_THRESHOLD if spec.threshold is None else spec.threshold
        if not 0 < score <= 1:
            raise ValidationError("threshold", "for anomaly rules: a score, >0 and ≤1")
        return score

    async def _channel_ids(self, project_id: str, wanted: Sequence[str]) -> tuple[str, ...]:
        ids = tuple(dict.fromkeys(wanted))
        if len(ids) > MAX_CHANNELS_PER_RULE:
            raise ValidationError("channels", f"at most {MAX_CHANNELS_PER_RULE} channels")
        for index, channel_id in enumerate(ids):
            if await self._channels.get_channel(project_id, channel_id) is None:
                raise ValidationError(
                    f"channels[{index}]", "no such channel in this project", channel_id=channel_id
                )
        return ids

    # channels ------------------------------------------------------------------------

    async def create_channel(
        self, project_id: str, name: str, type: ChannelType, target: str,
        secret: str | None = None,
    ) -> Channel:
        if not name.strip() or len(name) > 100:
            raise ValidationError("name", "1-100 characters")
        _check_target(type, target)
        if secret is not None and type is not ChannelType.WEBHOOK:
            raise ValidationError("secret", "only webhook channels sign their requests")
        refusal = await self._targets.refusal(type, target.strip()) if self._targets else None
        if refusal is not None:
            raise ValidationError("target", refusal)
        channel = Channel(
            self._ids.new_id(), project_id, name, type, target.strip(), secret,
            self._clock.now(),
        )
        await self._channels.save_channel(channel)
        return channel

    async def list_channels(self, project_id: str) -> list[Channel]:
        return await self._channels.list_channels(project_id)

    async def get_channel(self, project_id: str, channel_id: str) -> Channel:
        channel = await self._channels.get_channel(project_id, channel_id)
        if channel is None:
            raise NotFound("no such channel", {"field": "channel_id", "channel_id": channel_id})
        return channel

    async def delete_channel(self, project_id: str, channel_id: str) -> None:
        channel = await self.get_channel(project_id, channel_id)
        users = [r.id for r in await self._rules.list_rules(project_id) if channel.id in r.channels]
        if users:
            raise Conflict(
                "the channel is used by rules; remove it from them first",
                {"field": "channel_id", "rules": users[:20]},
            )
        await self._channels.delete_channel(project_id, channel_id)

    async def test_channel(self, project_id: str, channel_id: str) -> DeliveryAttempt:
        """Send one "test" notification, once, and say how it went (nothing is recorded)."""
        channel = await self.get_channel(project_id, channel_id)
        if self._test_cap is not None:
            await self._test_cap.take(project_id, channel.id)
        notification = Notification(
            "test", project_id, None, None, f"Test notification for channel {channel.name}",
            Severity.INFO.value, None, self._clock.now(),
        )
        return await self._dispatcher.send_once(channel, notification)

    # incidents -----------------------------------------------------------------------

    async def list_incidents(
        self, project_id: str, status: IncidentStatus | None = None,
        rule_id: str | None = None, limit: int = 100,
    ) -> list[Incident]:
        if not 1 <= limit <= 1000:
            raise ValidationError("limit", "between 1 and 1000")
        return await self._incidents.list_incidents(project_id, status, rule_id, limit)

    async def get_incident(self, project_id: str, incident_id: str) -> IncidentView:
        incident = await self._incident(project_id, incident_id)
        return IncidentView(incident, tuple(await self._incidents.deliveries(incident.id)))

    async def acknowledge(self, project_id: str, incident_id: str, by: str) -> Incident:
        incident = await self._incident(project_id, incident_id)
        acknowledged = incident.acknowledge(self._clock.now(), by)
        await self._incidents.save_incident(acknowledged)
        return acknowledged

    async def resolve(self, project_id: str, incident_id: str, by: str) -> Incident:
        """Resolve by hand (see the module's guarantees for a rule that still fires)."""
        incident = await self._incident(project_id, incident_id)
        resolved = incident.resolve(self._clock.now(), f"resolved by {by}")
        await self._incidents.save_incident(resolved)
        return resolved

    async def _incident(self, project_id: str, incident_id: str) -> Incident:
        incident = await self._incidents.get_incident(project_id, incident_id)
        if incident is None:
            raise NotFound("no such incident", {"field": "incident_id", "incident_id": incident_id})
        return incident


def _check_target(type: ChannelType, target: str) -> None:
    target = target.strip()
    if type is ChannelType.EMAIL:
        addresses = [a.strip() for a in target.split(",")]
        if not 1 <= len(addresses) <= 10 or not all(_EMAIL.match(a) for a in addresses):
            raise ValidationError("target", "1-10 e-mail addresses, comma-separated")
        return
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(target) > 2000:
        raise ValidationError("target", "an http(s) URL with a host, at most 2000 characters")
    if parts.username is not None or parts.password is not None:
        raise ValidationError("target", "no credentials in the URL (webhooks sign with a secret)")
