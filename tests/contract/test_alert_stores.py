"""RuleStore, ChannelStore and IncidentStore contracts: the in-memory reference and
PostgreSQL behave alike, and every read is scoped to its project."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs

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

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
A, B = "project-a", "project-b"


def rule(rule_id: str, project: str = A, **changes: Any) -> AlertRule:
    base = AlertRule(
        id=rule_id, project_id=project, name=f"rule {rule_id}", kind=RuleKind.THRESHOLD,
        metric_name="latency_ms_p95", window=timedelta(minutes=5), service_name="api",
        tags={"region": "eu"}, aggregation=Aggregation.P95, comparator=Comparator.GTE,
        threshold=250.5, for_duration=timedelta(seconds=90), severity=Severity.CRITICAL,
        channels=("c-1", "c-2"), enabled=True, created_at=T0, updated_at=T0,
    )
    return attrs.evolve(base, **changes)


# -- rules ---------------------------------------------------------------------------------


async def test_rules_round_trip_and_update(rule_store: Any) -> None:
    original = rule("r-1")
    await rule_store.save_rule(original)
    assert await rule_store.get_rule(A, "r-1") == original
    minimal = rule("r-2", kind=RuleKind.NO_DATA, service_name=None, tags={}, channels=(),
                   created_at=None, updated_at=None, for_duration=timedelta(0))
    await rule_store.save_rule(minimal)
    assert await rule_store.get_rule(A, "r-2") == minimal
    changed = attrs.evolve(original, threshold=1.0, enabled=False,
                           updated_at=T0 + timedelta(hours=1))
    await rule_store.save_rule(changed)
    assert await rule_store.get_rule(A, "r-1") == changed


async def test_rules_are_scoped_to_their_project(rule_store: Any) -> None:
    await rule_store.save_rule(rule("r-a"))
    await rule_store.save_rule(rule("r-b", B))
    assert await rule_store.get_rule(B, "r-a") is None
    assert [r.id for r in await rule_store.list_rules(B)] == ["r-b"]
    assert await rule_store.delete_rule(B, "r-a") is False
    assert await rule_store.get_rule(A, "r-a") is not None
    assert await rule_store.delete_rule(A, "r-a") is True
    assert await rule_store.delete_rule(A, "r-a") is False
    assert await rule_store.get_rule(A, "r-a") is None
    assert await rule_store.list_rules(A) == []


async def test_list_rules_orders_by_creation_then_id(rule_store: Any) -> None:
    rules = [
        rule("r-3", created_at=T0),
        rule("r-1", created_at=T0 + timedelta(minutes=1)),
        rule("r-2", created_at=T0),
        rule("R-0", created_at=None),
        rule("r-0", created_at=None),
    ]
    for r in rules:
        await rule_store.save_rule(r)
    assert [r.id for r in await rule_store.list_rules(A)] == ["r-2", "r-3", "r-1", "R-0", "r-0"]


async def test_enabled_rules_of_every_project_by_id(rule_store: Any) -> None:
    await rule_store.save_rule(rule("r-b", B))
    await rule_store.save_rule(rule("r-a", A))
    await rule_store.save_rule(rule("r-off", A, enabled=False))
    await rule_store.save_rule(rule("Z-upper", B))
    assert [r.id for r in await rule_store.enabled_rules()] == ["Z-upper", "r-a", "r-b"]


async def test_rule_states_round_trip(rule_store: Any) -> None:
    await rule_store.save_rule(rule("r-1"))
    assert await rule_store.get_states(["r-1"]) == {}
    ist = timezone(timedelta(hours=5, minutes=30))
    state = RuleState("r-1", A, RuleStatus.FIRING, T0.astimezone(ist), "i-1", 301.25,
                      T0 + timedelta(minutes=1))
    await rule_store.save_states([state, RuleState("r-2", B)])
    assert await rule_store.get_states(["r-1", "r-2", "r-9"]) == {
        "r-1": state, "r-2": RuleState("r-2", B)}
    cleared = attrs.evolve(state, status=RuleStatus.OK, incident_id=None, last_value=None)
    await rule_store.save_states([cleared])
    assert await rule_store.get_states(["r-1"]) == {"r-1": cleared}
    assert await rule_store.get_states([]) == {}
    # deleting the rule deletes its state
    assert await rule_store.delete_rule(A, "r-1")
    assert await rule_store.get_states(["r-1"]) == {}


async def test_save_states_takes_a_whole_tick_and_the_last_of_a_rule_wins(rule_store: Any) -> None:
    states = [RuleState(f"r-{i}", A if i % 2 else B, RuleStatus.PENDING, T0, None, float(i), T0)
              for i in range(2_000)]
    await rule_store.save_states(states)
    await rule_store.save_states([])
    firing = attrs.evolve(states[7], status=RuleStatus.FIRING, incident_id="i-7")
    await rule_store.save_states([states[7], firing])
    found = await rule_store.get_states([s.rule_id for s in states])
    assert len(found) == 2_000
    assert found["r-7"] == firing
    assert found["r-1999"] == states[1999]


# -- channels ------------------------------------------------------------------------------


def channel(channel_id: str, project: str = A, name: str = "ops", **changes: Any) -> Channel:
    base = Channel(channel_id, project, name, ChannelType.WEBHOOK, "https://hooks.example/x",
                   "s3cret", T0)
    return attrs.evolve(base, **changes)


async def test_channels_round_trip_scoped_and_sorted_by_name(channel_store: Any) -> None:
    await channel_store.save_channel(channel("c-1", name="pager"))
    await channel_store.save_channel(channel("c-2", name="Email", type=ChannelType.EMAIL,
                                             target="ops@example.com", secret=None,
                                             created_at=None))
    await channel_store.save_channel(channel("c-3", name="alerts", type=ChannelType.SLACK))
    await channel_store.save_channel(channel("c-b", B, name="theirs"))
    assert [c.name for c in await channel_store.list_channels(A)] == ["Email", "alerts", "pager"]
    assert await channel_store.get_channel(A, "c-2") == channel(
        "c-2", name="Email", type=ChannelType.EMAIL, target="ops@example.com", secret=None,
        created_at=None)
    assert await channel_store.get_channel(B, "c-1") is None
    assert [c.id for c in await channel_store.list_channels(B)] == ["c-b"]
    renamed = channel("c-1", name="pager-2")
    await channel_store.save_channel(renamed)
    assert await channel_store.get_channel(A, "c-1") == renamed
    assert await channel_store.delete_channel(B, "c-1") is False
    assert await channel_store.delete_channel(A, "c-1") is True
    assert await channel_store.delete_channel(A, "c-1") is False
    assert await channel_store.get_channel(A, "c-1") is None


# -- incidents -----------------------------------------------------------------------------


def incident(incident_id: str, project: str = A, rule_id: str = "r-1",
             started: datetime = T0, **changes: Any) -> Incident:
    base = Incident(
        incident_id, project, rule_id, f"latency high ({incident_id})", Severity.CRITICAL,
        IncidentStatus.OPEN, started,
        timeline=(TimelineEntry(started, "fired", "p95 ≥ 250.5", 301.25),
                  TimelineEntry(started + timedelta(minutes=1), "note")),
        values=(301.25, 299.0, 1e-9),
        links={"metrics": "/metrics?x=1", "logs": "/logs?q=\"quoted\""},
    )
    return attrs.evolve(base, **changes)


async def test_incidents_round_trip_with_their_history(incident_store: Any) -> None:
    opened = incident("i-1")
    await incident_store.save_incident(opened)
    assert await incident_store.get_incident(A, "i-1") == opened
    later = T0 + timedelta(minutes=5)
    resolved = opened.acknowledge(later, "ann").observe(later, 12.5).resolve(
        later + timedelta(minutes=1), "back to normal")
    await incident_store.save_incident(resolved)
    got = await incident_store.get_incident(A, "i-1")
    assert got == resolved
    assert got.status is IncidentStatus.RESOLVED and got.values[-1] == 12.5
    bare = incident("i-2", timeline=(), values=(), links={})
    await incident_store.save_incident(bare)
    assert await incident_store.get_incident(A, "i-2") == bare


async def test_incidents_are_scoped_filtered_and_newest_first(incident_store: Any) -> None:
    for i in range(5):
        await incident_store.save_incident(incident(
            f"i-{i}", rule_id=f"r-{i % 2}", started=T0 + timedelta(minutes=i),
            status=IncidentStatus.RESOLVED if i == 3 else IncidentStatus.OPEN))
    await incident_store.save_incident(incident("i-same-a", started=T0))  # tie on started_at
    await incident_store.save_incident(incident("i-b", B, started=T0 + timedelta(hours=1)))
    listed = [i.id for i in await incident_store.list_incidents(A)]
    assert listed == ["i-4", "i-3", "i-2", "i-1", "i-same-a", "i-0"]
    assert [i.id for i in await incident_store.list_incidents(A, limit=2)] == ["i-4", "i-3"]
    assert [i.id for i in await incident_store.list_incidents(
        A, status=IncidentStatus.RESOLVED)] == ["i-3"]
    assert [i.id for i in await incident_store.list_incidents(A, rule_id="r-1")] == [
        "i-3", "i-1", "i-same-a"]
    assert [i.id for i in await incident_store.list_incidents(
        A, status=IncidentStatus.OPEN, rule_id="r-0")] == ["i-4", "i-2", "i-0"]
    assert await incident_store.get_incident(B, "i-1") is None
    assert [i.id for i in await incident_store.list_incidents(B)] == ["i-b"]


async def test_deliveries_are_recorded_in_order_per_incident(incident_store: Any) -> None:
    attempts = [
        DeliveryAttempt("c-1", "i-1", "fired", 1, T0, False, "HTTP 503"),
        DeliveryAttempt("c-1", "i-1", "fired", 2, T0 + timedelta(seconds=5), True),
        DeliveryAttempt("c-2", "i-2", "fired", 1, T0, True),
        DeliveryAttempt("c-1", "i-1", "resolved", 1, T0 + timedelta(hours=1), True, "ok"),
        DeliveryAttempt("c-3", None, "test", 1, T0, True),
    ]
    for attempt in attempts:
        await incident_store.record_delivery(attempt)
    assert await incident_store.deliveries("i-1") == [attempts[0], attempts[1], attempts[3]]
    assert await incident_store.deliveries("i-2") == [attempts[2]]
    assert await incident_store.deliveries("i-none") == []
