"""PostgreSQL rules, rule states, channels, incidents and delivery attempts.

Orderings match the in-memory reference; text is ordered with COLLATE "C" (code point
order, as Python sorts), never by the database's locale.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from opspilot.adapters.postgres import statements
from opspilot.domain.alerts import (
    AlertRule,
    Channel,
    ChannelType,
    Comparator,
    DeliveryAttempt,
    Incident,
    IncidentStatus,
    RuleKind,
    RuleState,
    RuleStatus,
    Severity,
    TimelineEntry,
)
from opspilot.domain.metrics import Aggregation

if TYPE_CHECKING:
    from opspilot.adapters.postgres.session import Database

RULE_COLUMNS = (
    'id, project_id, name, kind, metric_name, "window", service_name, tags, aggregation,'
    " comparator, threshold, for_duration, severity, channels, enabled, created_at, updated_at"
)
INCIDENT_COLUMNS = (
    'id, project_id, rule_id, title, severity, status, started_at, timeline, "values", links,'
    " acknowledged_at, resolved_at"
)
SAVE_RULE = statements.upsert("alert_rules", RULE_COLUMNS, "id")
SAVE_CHANNEL = statements.upsert(
    "channels", "id, project_id, name, type, target, secret, created_at", "id")
SAVE_INCIDENT = statements.upsert("incidents", INCIDENT_COLUMNS, "id")


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _rule(row: Any) -> AlertRule:
    return AlertRule(
        id=row["id"], project_id=row["project_id"], name=row["name"],
        kind=RuleKind(row["kind"]), metric_name=row["metric_name"], window=row["window"],
        service_name=row["service_name"], tags=orjson.loads(row["tags"]),
        aggregation=Aggregation(row["aggregation"]), comparator=Comparator(row["comparator"]),
        threshold=row["threshold"], for_duration=row["for_duration"],
        severity=Severity(row["severity"]), channels=tuple(row["channels"]),
        enabled=row["enabled"], created_at=row["created_at"], updated_at=row["updated_at"],
    )


def _state(row: Any) -> RuleState:
    return RuleState(
        row["rule_id"], row["project_id"], RuleStatus(row["status"]), row["since"],
        row["incident_id"], row["last_value"], row["last_evaluated"],
    )


class PostgresRuleStore:
    """Implements RuleStore. Raises TransientStoreError when PostgreSQL cannot answer."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def save_rule(self, rule: AlertRule) -> None:
        await statements.execute(
            self._db, SAVE_RULE,
            rule.id, rule.project_id, rule.name, rule.kind.value, rule.metric_name,
            rule.window, rule.service_name, _json(dict(rule.tags)), rule.aggregation.value,
            rule.comparator.value, rule.threshold, rule.for_duration, rule.severity.value,
            list(rule.channels), rule.enabled, rule.created_at, rule.updated_at,
        )

    async def get_rule(self, project_id: str, rule_id: str) -> AlertRule | None:
        return await statements.fetch_one(
            self._db, _rule,
            f"SELECT {RULE_COLUMNS} FROM alert_rules WHERE project_id = $1 AND id = $2",
            project_id, rule_id,
        )

    async def list_rules(self, project_id: str) -> list[AlertRule]:
        return await statements.fetch_all(
            self._db, _rule,
            f"SELECT {RULE_COLUMNS} FROM alert_rules WHERE project_id = $1"
            ' ORDER BY created_at NULLS LAST, id COLLATE "C"',
            project_id,
        )

    async def delete_rule(self, project_id: str, rule_id: str) -> bool:
        async with self._db.connection() as conn, conn.transaction():
            deleted = await conn.fetchval(
                "DELETE FROM alert_rules WHERE project_id = $1 AND id = $2 RETURNING id",
                project_id, rule_id,
            )
            if deleted is not None:
                await conn.execute("DELETE FROM rule_states WHERE rule_id = $1", rule_id)
        return deleted is not None

    async def enabled_rules(self) -> list[AlertRule]:
        return await statements.fetch_all(
            self._db, _rule,
            f'SELECT {RULE_COLUMNS} FROM alert_rules WHERE enabled ORDER BY id COLLATE "C"'
        )

    async def get_states(self, rule_ids: Sequence[str]) -> dict[str, RuleState]:
        if not rule_ids:
            return {}
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT rule_id, project_id, status, since, incident_id, last_value,"
                " last_evaluated FROM rule_states WHERE rule_id = ANY($1::text[])",
                list(rule_ids),
            )
        return {r["rule_id"]: _state(r) for r in rows}

    async def save_states(self, states: Sequence[RuleState]) -> None:
        """One upsert over unnest'ed columns for the whole list: a tick saves a state per
        rule, and 10,000 single-row round trips were most of a tick's time."""
        latest = {s.rule_id: s for s in states}  # one row per rule: ON CONFLICT needs it
        if not latest:
            return
        columns = list(zip(*[
            (s.rule_id, s.project_id, s.status.value, s.since, s.incident_id, s.last_value,
             s.last_evaluated) for s in latest.values()], strict=True))
        async with self._db.connection() as conn:
            await conn.execute(
                "INSERT INTO rule_states (rule_id, project_id, status, since, incident_id,"
                " last_value, last_evaluated)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[],"
                " $5::text[], $6::float8[], $7::timestamptz[])"
                " ON CONFLICT (rule_id) DO UPDATE SET project_id = EXCLUDED.project_id,"
                " status = EXCLUDED.status, since = EXCLUDED.since,"
                " incident_id = EXCLUDED.incident_id, last_value = EXCLUDED.last_value,"
                " last_evaluated = EXCLUDED.last_evaluated",
                *(list(c) for c in columns),
            )


class PostgresChannelStore:
    """Implements ChannelStore. Raises TransientStoreError when PostgreSQL cannot answer.

    At rest, a channel's secret and the target of webhook and Slack channels (URLs that may
    carry tokens; Slack's is the credential itself) are sealed by the database's SecretBox
    (Fernet); e-mail addresses stay readable. Rows written before encryption are read as
    they are until `reseal_all` (`opspilot secrets rotate`) seals them."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def _seal_target(self, kind: ChannelType, target: str) -> str:
        return target if kind is ChannelType.EMAIL else self._db.secret_box.seal(target)

    def _channel(self, row: Any) -> Channel:
        box = self._db.secret_box
        return Channel(row["id"], row["project_id"], row["name"], ChannelType(row["type"]),
                       box.open(row["target"]), box.open(row["secret"]) if row["secret"] else None,
                       row["created_at"])

    async def reseal_all(self) -> int:
        """Seal every channel's secrets under the current key (the first of
        OPSPILOT_SECRET_KEY), plaintext ones included; returns how many rows changed."""
        box = self._db.secret_box
        async with self._db.connection() as conn, conn.transaction():
            rows = await conn.fetch("SELECT id, type, target, secret FROM channels FOR UPDATE")
            changed = 0
            for row in rows:
                target = row["target"]
                if ChannelType(row["type"]) is not ChannelType.EMAIL:
                    target = box.reseal(target)
                secret = box.reseal(row["secret"]) if row["secret"] else None
                if (target, secret) != (row["target"], row["secret"]):
                    await conn.execute("UPDATE channels SET target = $2, secret = $3 WHERE id = $1",
                                       row["id"], target, secret)
                    changed += 1
        return changed

    async def save_channel(self, channel: Channel) -> None:
        target = self._seal_target(channel.type, channel.target)
        secret = self._db.secret_box.seal(channel.secret) if channel.secret else None
        await statements.execute(
            self._db, SAVE_CHANNEL,
            channel.id, channel.project_id, channel.name, channel.type.value,
            target, secret, channel.created_at,
        )

    async def get_channel(self, project_id: str, channel_id: str) -> Channel | None:
        return await statements.fetch_one(
            self._db, self._channel,
            "SELECT * FROM channels WHERE project_id = $1 AND id = $2",
            project_id, channel_id,
        )

    async def list_channels(self, project_id: str) -> list[Channel]:
        return await statements.fetch_all(
            self._db, self._channel,
            'SELECT * FROM channels WHERE project_id = $1 ORDER BY name COLLATE "C"',
            project_id,
        )

    async def delete_channel(self, project_id: str, channel_id: str) -> bool:
        async with self._db.connection() as conn:
            deleted = await conn.fetchval(
                "DELETE FROM channels WHERE project_id = $1 AND id = $2 RETURNING id",
                project_id, channel_id,
            )
        return deleted is not None


def _entry_json(entry: TimelineEntry) -> dict[str, Any]:
    return {"at": entry.at.isoformat(), "event": entry.event, "detail": entry.detail,
            "value": entry.value}


def _entry(doc: dict[str, Any]) -> TimelineEntry:
    return TimelineEntry(datetime.fromisoformat(doc["at"]), doc["event"], doc["detail"],
                         doc["value"])


def _incident(row: Any) -> Incident:
    return Incident(
        id=row["id"], project_id=row["project_id"], rule_id=row["rule_id"], title=row["title"],
        severity=Severity(row["severity"]), status=IncidentStatus(row["status"]),
        started_at=row["started_at"],
        timeline=tuple(_entry(e) for e in orjson.loads(row["timeline"])),
        values=tuple(float(v) for v in orjson.loads(row["values"])),
        links=orjson.loads(row["links"]),
        acknowledged_at=row["acknowledged_at"], resolved_at=row["resolved_at"],
    )


def _delivery(row: Any) -> DeliveryAttempt:
    return DeliveryAttempt(row["channel_id"], row["incident_id"], row["event"], row["attempt"],
                           row["at"], row["ok"], row["detail"])


class PostgresIncidentStore:
    """Implements IncidentStore. Raises TransientStoreError when PostgreSQL cannot answer."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def save_incident(self, incident: Incident) -> None:
        await statements.execute(
            self._db, SAVE_INCIDENT,
            incident.id, incident.project_id, incident.rule_id, incident.title,
            incident.severity.value, incident.status.value, incident.started_at,
            _json([_entry_json(e) for e in incident.timeline]), _json(list(incident.values)),
            _json(dict(incident.links)), incident.acknowledged_at, incident.resolved_at,
        )

    async def get_incident(self, project_id: str, incident_id: str) -> Incident | None:
        return await statements.fetch_one(
            self._db, _incident,
            f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE project_id = $1 AND id = $2",
            project_id, incident_id,
        )

    async def list_incidents(
        self,
        project_id: str,
        status: IncidentStatus | None = None,
        rule_id: str | None = None,
        limit: int = 100,
    ) -> list[Incident]:
        return await statements.fetch_all(
            self._db, _incident,
            f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE project_id = $1"
            " AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR rule_id = $3)"
            ' ORDER BY started_at DESC, id COLLATE "C" DESC LIMIT $4',
            project_id, status.value if status else None, rule_id, max(limit, 0),
        )

    async def record_delivery(self, attempt: DeliveryAttempt) -> None:
        async with self._db.connection() as conn:
            await conn.execute(
                "INSERT INTO notification_deliveries (channel_id, incident_id, event, attempt,"
                " at, ok, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                attempt.channel_id, attempt.incident_id, attempt.event, attempt.attempt,
                attempt.at, attempt.ok, attempt.detail,
            )

    async def deliveries(self, incident_id: str) -> list[DeliveryAttempt]:
        return await statements.fetch_all(
            self._db, _delivery,
            "SELECT channel_id, incident_id, event, attempt, at, ok, detail"
            " FROM notification_deliveries WHERE incident_id = $1 ORDER BY id",
            incident_id,
        )
