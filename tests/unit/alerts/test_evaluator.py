"""Rule evaluation over the in-memory stores: incidents, notifications, restarts, ticks."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from datetime import timedelta
from typing import Any

import attrs
import pytest

from opspilot.application.alerting import RetryPolicy, RuleSpec
from opspilot.domain.alerts import (
    Channel,
    ChannelType,
    IncidentStatus,
    Notification,
    RuleKind,
    RuleStatus,
    Severity,
    describe_condition,
    incident_id_for,
)
from opspilot.domain.analysis import DEFAULT_ANOMALY_THRESHOLD
from opspilot.domain.errors import DeliveryFailed, ValidationError
from tests.unit.alerts.harness import MINUTE, T0, Engine

P = "project-a"
# 2 points a minute: 50 everywhere, except 200 during minutes 10-19 and 40-49.
VALUES = [200.0 if (10 <= i // 2 < 20 or 40 <= i // 2 < 50) else 50.0 for i in range(120)]
LATENCY = RuleSpec(name="latency high", metric_name="latency", service_name="api",
                   window=timedelta(minutes=5), threshold=100.0)


async def _setup(engine: Engine, spec: RuleSpec = LATENCY, project: str = P) -> Any:
    await engine.write(project, "latency", VALUES)
    channel = await engine.alerts.create_channel(
        project, "ops", ChannelType.WEBHOOK, "https://hooks.example.com/x"
    )
    return await engine.alerts.create_rule(project, RuleSpec(**{
        **_fields(spec), "channels": (channel.id,)}))


def _fields(spec: RuleSpec) -> dict[str, Any]:
    import attrs

    return attrs.asdict(spec, recurse=False)


async def _minutes(engine: Engine, first: int, last: int) -> None:
    for minute in range(first, last + 1):
        await engine.evaluate_at(T0 + minute * MINUTE)


def _events(engine: Engine) -> list[tuple[str, str | None]]:
    return [(s.notification.event, s.notification.incident_id) for s in engine.notifier.sent]


async def test_one_incident_per_firing_episode_and_auto_resolve() -> None:
    engine = Engine()
    rule = await _setup(engine)
    await _minutes(engine, 1, 60)
    incidents = await engine.incidents.list_incidents(P)
    assert len(incidents) == 2
    second, first = incidents  # newest first
    assert first.started_at == T0 + 12 * MINUTE and first.resolved_at == T0 + 24 * MINUTE
    assert second.started_at == T0 + 42 * MINUTE and second.resolved_at == T0 + 54 * MINUTE
    assert first.status is IncidentStatus.RESOLVED and first.rule_id == rule.id
    assert first.values[0] == pytest.approx(110.0) and max(first.values) == 200.0
    assert first.values[-1] == pytest.approx(80.0)  # the value that cleared it
    assert [e.event for e in first.timeline] == ["fired", "resolved"]
    assert first.timeline[-1].detail == "condition cleared"
    assert _events(engine) == [("fired", first.id), ("resolved", first.id),
                               ("fired", second.id), ("resolved", second.id)]


async def test_incident_links_point_at_the_metric_and_logs_around_its_start() -> None:
    engine = Engine()
    await _setup(engine)
    await _minutes(engine, 1, 12)
    (incident,) = await engine.incidents.list_incidents(P)
    assert incident.links["metrics"].startswith("/api/metrics/query?metric_name=latency&")
    assert "service_name=api" in incident.links["metrics"]
    assert "start_time=2024-03-01T11%3A12%3A00%2B00%3A00" in incident.links["metrics"]
    assert incident.links["logs"].startswith("/api/logs/query?start_time=2024-03-01T11%3A57")
    assert "end_time=2024-03-01T12%3A27" in incident.links["logs"]
    assert "latency high" in incident.title and "> 100" in incident.title


async def test_all_window_rules_of_a_tick_share_one_store_call() -> None:
    engine = Engine()
    await engine.write(P, "latency", VALUES)
    for n in range(25):
        await engine.alerts.create_rule(P, RuleSpec(name=f"r{n}", metric_name="latency",
                                                    threshold=float(n * 10)))
    await engine.alerts.create_rule(P, RuleSpec(name="silence", metric_name="latency",
                                                kind=RuleKind.NO_DATA))
    engine.metrics.window_calls.clear()
    report = await engine.evaluate_at(T0 + 15 * MINUTE)
    assert engine.metrics.window_calls == [26]
    assert report.evaluated == 26 and len(report.fired) == 20  # thresholds 0..190 < 200


async def test_states_survive_a_restart() -> None:
    engine = Engine()
    await _setup(engine)
    await _minutes(engine, 1, 15)
    engine.restart()  # a new evaluator, dispatcher and scheduler on the same stores
    await _minutes(engine, 16, 30)
    (incident,) = await engine.incidents.list_incidents(P)
    assert incident.status is IncidentStatus.RESOLVED
    assert _events(engine) == [("fired", incident.id), ("resolved", incident.id)]


async def test_the_same_tick_evaluated_twice_opens_one_incident() -> None:
    engine = Engine()
    rule = await _setup(engine)
    await _minutes(engine, 1, 12)
    states_before = dict(engine.rules.states)
    engine.rules.states.clear()  # as if the state write was lost before the redelivery
    await engine.evaluate_at(T0 + 12 * MINUTE)
    assert len(await engine.incidents.list_incidents(P)) == 1
    assert engine.rules.states[rule.id].incident_id == incident_id_for(rule.id, T0 + 12 * MINUTE)
    engine.rules.states.update(states_before)
    await engine.evaluate_at(T0 + 12 * MINUTE)  # already evaluated: nothing happens
    assert len(engine.notifier.sent) == 2  # the redelivery re-notified once; no more


async def test_manual_resolve_while_firing_waits_for_the_rule_to_clear() -> None:
    engine = Engine()
    rule = await _setup(engine)
    await _minutes(engine, 1, 14)
    (incident,) = await engine.incidents.list_incidents(P)
    resolved = await engine.alerts.resolve(P, incident.id, "alice")
    assert resolved.timeline[-1].detail == "resolved by alice"
    await _minutes(engine, 15, 30)  # still firing until 23, clear from 24
    (after,) = await engine.incidents.list_incidents(P)
    assert after == resolved  # no new values, no second resolution
    assert engine.rules.states[rule.id].status is RuleStatus.OK
    assert [e for e, _ in _events(engine)] == ["fired"]  # clearing told no one
    await _minutes(engine, 31, 45)  # the next episode opens a new incident
    newest, _ = await engine.incidents.list_incidents(P)
    assert newest.id != incident.id and newest.status is IncidentStatus.OPEN


async def test_acknowledged_incident_still_resolves_and_notifies() -> None:
    engine = Engine()
    await _setup(engine)
    await _minutes(engine, 1, 13)
    (incident,) = await engine.incidents.list_incidents(P)
    await engine.alerts.acknowledge(P, incident.id, "bob")
    await _minutes(engine, 14, 25)
    (done,) = await engine.incidents.list_incidents(P)
    assert [e.event for e in done.timeline] == ["fired", "acknowledged", "resolved"]
    assert [e for e, _ in _events(engine)] == ["fired", "resolved"]


async def test_for_duration_delays_the_incident() -> None:
    engine = Engine()
    await _setup(engine, RuleSpec(**{**_fields(LATENCY), "for_duration": 3 * MINUTE}))
    await _minutes(engine, 1, 20)
    (incident,) = await engine.incidents.list_incidents(P)
    assert incident.started_at == T0 + 15 * MINUTE


async def test_no_data_rule() -> None:
    engine = Engine()
    await engine.write(P, "heartbeat", [1.0] * 20, step=MINUTE)  # minutes 0-19
    await engine.alerts.create_rule(P, RuleSpec(name="silent", metric_name="heartbeat",
                                                kind=RuleKind.NO_DATA, window=2 * MINUTE))
    await _minutes(engine, 1, 30)
    (incident,) = await engine.incidents.list_incidents(P)
    assert incident.started_at == T0 + 22 * MINUTE and incident.status is IncidentStatus.OPEN


async def test_disabling_a_firing_rule_resolves_its_incident() -> None:
    engine = Engine()
    rule = await _setup(engine)
    await _minutes(engine, 1, 13)
    await engine.alerts.set_enabled(P, rule.id, False)
    (incident,) = await engine.incidents.list_incidents(P)
    assert incident.status is IncidentStatus.RESOLVED
    assert incident.timeline[-1].detail == "rule disabled"
    assert engine.rules.states[rule.id].status is RuleStatus.OK


async def test_rules_are_checked_against_their_project() -> None:
    engine = Engine()
    foreign = await engine.alerts.create_channel(
        "project-b", "theirs", ChannelType.EMAIL, "ops@example.com"
    )
    with pytest.raises(ValidationError) as caught:
        await engine.alerts.create_rule(P, RuleSpec(**{**_fields(LATENCY),
                                                       "channels": (foreign.id,)}))
    assert caught.value.field == "channels[0]"
    with pytest.raises(ValidationError) as caught:
        await engine.alerts.create_rule(P, RuleSpec(name="x", metric_name="m"))
    assert caught.value.field == "threshold"
    with pytest.raises(ValidationError) as caught:
        await engine.alerts.create_rule(P, RuleSpec(name="x", metric_name="m",
                                                    kind=RuleKind.ANOMALY))
    assert caught.value.field == "kind"  # no analyzer configured


class FlakyNotifier:
    """Fails a channel a given number of times (or for ever), then delivers."""

    def __init__(self, failures: dict[str, int | None]) -> None:
        self.failures = failures
        self.delivered: list[tuple[str, str]] = []

    async def send(self, channel: Channel, notification: Notification) -> None:
        left = self.failures.get(channel.name, 0)
        if left is None:
            raise DeliveryFailed("refused for good", retryable=False)
        if left > 0:
            self.failures[channel.name] = left - 1
            raise DeliveryFailed("try later", retryable=True)
        self.delivered.append((channel.name, notification.event))


async def test_a_failing_channel_blocks_neither_the_others_nor_the_next_tick() -> None:
    notifier = FlakyNotifier({"broken": None, "flaky": 2, "dead": 99})
    engine = Engine(notifier=notifier)
    await engine.write(P, "latency", VALUES)
    ids = [(await engine.alerts.create_channel(
        P, name, ChannelType.WEBHOOK, "https://hooks.example.com/x")).id
        for name in ("broken", "flaky", "dead", "fine")]
    await engine.alerts.create_rule(P, RuleSpec(**{**_fields(LATENCY), "channels": tuple(ids)}))
    await _minutes(engine, 1, 12)
    (incident,) = await engine.incidents.list_incidents(P)
    attempts = await engine.incidents.deliveries(incident.id)
    per_channel = {cid: [a.ok for a in attempts if a.channel_id == cid] for cid in ids}
    assert per_channel == {
        ids[0]: [False],                       # not retryable: one attempt
        ids[1]: [False, False, True],          # retried with backoff, then delivered
        ids[2]: [False, False, False, False],  # retries exhausted
        ids[3]: [True],
    }
    assert sorted(engine.sleeps.delays) == pytest.approx([0.01, 0.01, 0.02, 0.02, 0.04])
    await _minutes(engine, 13, 25)  # the following ticks still run and resolve
    assert ("fine", "resolved") in notifier.delivered


async def test_scheduler_owns_each_tick_once_and_chunks_the_rules() -> None:
    engine = Engine()
    await engine.write(P, "latency", VALUES)
    for n in range(7):
        await engine.alerts.create_rule(P, RuleSpec(name=f"r{n}", metric_name="latency",
                                                    threshold=100.0))
    from opspilot.application.alerting import AlertScheduler

    engine.scheduler = AlertScheduler(engine.rules, engine.lock, engine.queue, engine.evaluator,
                                      engine.clock, interval=MINUTE, chunk_size=3)
    rival = AlertScheduler(engine.rules, engine.lock, engine.queue, engine.evaluator,
                           engine.clock, interval=MINUTE, chunk_size=3)
    engine.clock.current = T0 + 12 * MINUTE + timedelta(seconds=7)
    mine = await engine.scheduler.tick(engine.clock.current)
    theirs = await rival.tick(engine.clock.current)
    assert mine.owned and (mine.rules, mine.chunks) == (7, 3) and mine.at == T0 + 12 * MINUTE
    assert not theirs.owned and engine.queue.depth() == 3
    report = await rival.run_once(engine.clock.current)  # the rival drains: competing consumer
    assert report.evaluated == 7 and len(report.fired) == 7 and engine.queue.depth() == 0
    assert engine.queue.in_flight == 0


async def test_a_failed_chunk_is_retried_then_dropped() -> None:
    engine = Engine()
    await _setup(engine)

    class Down(Exception):
        pass

    async def broken(requests: Any) -> Any:
        raise Down("store exploded")

    engine.metrics.aggregate_windows = broken  # type: ignore[method-assign]
    engine.clock.current = T0 + 12 * MINUTE
    report = await engine.scheduler.run_once(engine.clock.current)
    assert report.evaluated == 0 and report.skipped == 3  # 3 attempts, then dropped
    assert engine.queue.depth() == 0 and engine.queue.in_flight == 0


@pytest.mark.skipif(
    importlib.util.find_spec("opspilot.adapters.ai.in_process") is None,
    reason="the in-process analyzer (adapters/ai/in_process.py) is not written yet",
)
async def test_anomaly_rule_fires_on_a_spike() -> None:
    from opspilot.adapters.ai.in_process import InProcessAnalyzer

    engine = Engine(analyzer=InProcessAnalyzer())
    values = [50.0 + (i % 5) for i in range(120)]  # one point a minute for two hours
    values[100] = 400.0
    await engine.write(P, "latency", values, step=MINUTE)
    rule = await engine.alerts.create_rule(P, RuleSpec(
        name="latency anomaly", metric_name="latency", service_name="api",
        kind=RuleKind.ANOMALY, window=MINUTE))
    assert rule.threshold == DEFAULT_ANOMALY_THRESHOLD
    await _minutes(engine, 90, 100)
    assert await engine.incidents.list_incidents(P) == []
    await engine.evaluate_at(T0 + 101 * MINUTE)  # minute 100 is now the last full bucket
    (incident,) = await engine.incidents.list_incidents(P)
    assert incident.started_at == T0 + 101 * MINUTE and incident.values == (400.0,)
    await engine.evaluate_at(T0 + 102 * MINUTE)
    (incident,) = await engine.incidents.list_incidents(P)
    assert incident.status is IncidentStatus.RESOLVED


@pytest.mark.parametrize("for_minutes", [0, 3])
async def test_an_anomaly_incident_lasts_as_long_as_the_anomaly(for_minutes: int) -> None:
    # Latency steps from ~52 to ~202 at minute 200. The score marks the step once; the
    # incident stays open while the series is still off what the detector expects (it
    # used to resolve on the very next tick), resolves once the new level is expected,
    # and a rule with for_duration fires when the anomaly has lasted that long.
    from opspilot.adapters.ai.in_process import InProcessAnalyzer

    engine = Engine(analyzer=InProcessAnalyzer())
    values = [50.0 + (i % 5) + 150.0 * (i >= 200) for i in range(320)]
    await engine.write(P, "latency", values, step=MINUTE)
    await engine.alerts.create_rule(P, RuleSpec(
        name="latency anomaly", metric_name="latency", service_name="api",
        kind=RuleKind.ANOMALY, window=MINUTE, for_duration=for_minutes * MINUTE))
    await _minutes(engine, 190, 200)
    assert await engine.incidents.list_incidents(P) == []
    fires = 201 + for_minutes  # minute 200 is the last full bucket at 201
    await _minutes(engine, 201, fires + 5)
    (incident,) = await engine.incidents.list_incidents(P)
    assert incident.started_at == T0 + fires * MINUTE
    assert incident.status is IncidentStatus.OPEN and len(incident.values) == 6
    assert "anomalous since" in incident.timeline[0].detail or for_minutes == 0
    await _minutes(engine, fires + 6, 319)
    (incident,) = await engine.incidents.list_incidents(P)
    assert incident.status is IncidentStatus.RESOLVED
    assert T0 + 210 * MINUTE < incident.resolved_at < T0 + 280 * MINUTE


async def test_an_anomaly_rule_stored_with_sigmas_is_judged_at_the_default_score() -> None:
    from opspilot.adapters.ai.in_process import InProcessAnalyzer

    engine = Engine(analyzer=InProcessAnalyzer())
    values = [50.0 + (i % 5) for i in range(120)]
    values[100] = 400.0
    await engine.write(P, "latency", values, step=MINUTE)
    rule = await engine.alerts.create_rule(P, RuleSpec(
        name="latency anomaly", metric_name="latency", service_name="api",
        kind=RuleKind.ANOMALY, window=MINUTE))
    await engine.rules.save_rule(attrs.evolve(rule, threshold=3.0))  # saved before scores
    assert describe_condition(attrs.evolve(rule, threshold=3.0)).endswith("(score ≥ 0.75)")
    await engine.evaluate_at(T0 + 101 * MINUTE)
    (incident,) = await engine.incidents.list_incidents(P)
    assert incident.values == (400.0,)
    with pytest.raises(ValidationError) as caught:  # saving it again asks for a score
        await engine.alerts.update_rule(P, rule.id, {"severity": Severity.CRITICAL})
    assert caught.value.field == "threshold"


class HangingNotifier:
    """Never answers for the channel named "stuck"."""

    def __init__(self) -> None:
        self.delivered: list[str] = []

    async def send(self, channel: Channel, notification: Notification) -> None:
        if channel.name == "stuck":
            await asyncio.sleep(30)
        self.delivered.append(channel.name)


async def test_a_hanging_channel_is_bounded_by_the_budget() -> None:
    notifier = HangingNotifier()
    engine = Engine(notifier=notifier, policy=RetryPolicy(budget_seconds=0.3))
    await engine.write(P, "latency", VALUES)
    ids = [(await engine.alerts.create_channel(
        P, name, ChannelType.WEBHOOK, "https://hooks.example.com/x")).id
        for name in ("stuck", "fine")]
    await engine.alerts.create_rule(P, RuleSpec(**{**_fields(LATENCY), "channels": tuple(ids)}))
    started = time.perf_counter()
    await _minutes(engine, 1, 12)
    assert time.perf_counter() - started < 3.0
    (incident,) = await engine.incidents.list_incidents(P)
    attempts = await engine.incidents.deliveries(incident.id)
    stuck = [a for a in attempts if a.channel_id == ids[0]]
    assert [(a.attempt, a.ok) for a in stuck] == [(1, False)]
    assert stuck[0].detail.startswith("no answer within the 0.3s budget")
    assert notifier.delivered == ["fine"]


async def test_run_once_says_when_the_tick_was_taken_and_force_evaluates_anyway(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue #15 item 15: `opspilot alerts --once` twice in one minute."""
    from opspilot.entrypoints.alert_scheduler import run_alerts

    engine = Engine()
    await _setup(engine)
    engine.clock.current = T0 + 12 * MINUTE
    stop = asyncio.Event()
    assert await run_alerts(engine.scheduler, engine.clock, stop, once=True) == 0
    assert engine.scheduler.last_tick is not None and engine.scheduler.last_tick.owned
    assert "already taken" not in capsys.readouterr().out

    assert await run_alerts(engine.scheduler, engine.clock, stop, once=True) == 0
    assert not engine.scheduler.last_tick.owned
    assert "was already taken" in capsys.readouterr().out

    report = await engine.scheduler.run_once(engine.clock.current, force=True)
    assert engine.scheduler.last_tick.owned and report.evaluated > 0
