"""In-memory rules, rule states, channels, incidents and delivery attempts."""

from __future__ import annotations

from collections.abc import Sequence

from opspilot.domain.alerts import (
    AlertRule,
    Channel,
    DeliveryAttempt,
    Incident,
    IncidentStatus,
    RuleState,
)


class InMemoryRuleStore:
    def __init__(self) -> None:
        self.rules: dict[str, AlertRule] = {}
        self.states: dict[str, RuleState] = {}

    async def save_rule(self, rule: AlertRule) -> None:
        self.rules[rule.id] = rule

    async def get_rule(self, project_id: str, rule_id: str) -> AlertRule | None:
        rule = self.rules.get(rule_id)
        return rule if rule is not None and rule.project_id == project_id else None

    async def list_rules(self, project_id: str) -> list[AlertRule]:
        rules = [r for r in self.rules.values() if r.project_id == project_id]
        return sorted(rules, key=lambda r: (r.created_at is None, r.created_at, r.id))

    async def delete_rule(self, project_id: str, rule_id: str) -> bool:
        if await self.get_rule(project_id, rule_id) is None:
            return False
        del self.rules[rule_id]
        self.states.pop(rule_id, None)
        return True

    async def enabled_rules(self) -> list[AlertRule]:
        return sorted((r for r in self.rules.values() if r.enabled), key=lambda r: r.id)

    async def get_states(self, rule_ids: Sequence[str]) -> dict[str, RuleState]:
        return {i: self.states[i] for i in rule_ids if i in self.states}

    async def save_states(self, states: Sequence[RuleState]) -> None:
        for state in states:
            self.states[state.rule_id] = state


class InMemoryChannelStore:
    def __init__(self) -> None:
        self.channels: dict[str, Channel] = {}

    async def save_channel(self, channel: Channel) -> None:
        self.channels[channel.id] = channel

    async def get_channel(self, project_id: str, channel_id: str) -> Channel | None:
        channel = self.channels.get(channel_id)
        return channel if channel is not None and channel.project_id == project_id else None

    async def list_channels(self, project_id: str) -> list[Channel]:
        return sorted(
            (c for c in self.channels.values() if c.project_id == project_id),
            key=lambda c: c.name,
        )

    async def delete_channel(self, project_id: str, channel_id: str) -> bool:
        if await self.get_channel(project_id, channel_id) is None:
            return False
        del self.channels[channel_id]
        return True


class InMemoryIncidentStore:
    def __init__(self) -> None:
        self.incidents: dict[str, Incident] = {}
        self.attempts: list[DeliveryAttempt] = []

    async def save_incident(self, incident: Incident) -> None:
        self.incidents[incident.id] = incident

    async def get_incident(self, project_id: str, incident_id: str) -> Incident | None:
        incident = self.incidents.get(incident_id)
        return incident if incident is not None and incident.project_id == project_id else None

    async def list_incidents(
        self,
        project_id: str,
        status: IncidentStatus | None = None,
        rule_id: str | None = None,
        limit: int = 100,
    ) -> list[Incident]:
        found = [
            i for i in self.incidents.values()
            if i.project_id == project_id
            and (status is None or i.status is status)
            and (rule_id is None or i.rule_id == rule_id)
        ]
        found.sort(key=lambda i: (i.started_at, i.id), reverse=True)
        return found[:limit]

    async def record_delivery(self, attempt: DeliveryAttempt) -> None:
        self.attempts.append(attempt)

    async def deliveries(self, incident_id: str) -> list[DeliveryAttempt]:
        return [a for a in self.attempts if a.incident_id == incident_id]
