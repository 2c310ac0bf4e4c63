"""The pure rule state machine: ok → pending → firing → ok, and what each step records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from opspilot.domain.alerts import (
    AlertRule,
    Comparator,
    Observation,
    RuleKind,
    RuleState,
    RuleStatus,
    TransitionKind,
    advance,
    condition_breached,
)
from opspilot.domain.errors import ValidationError

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def rule(for_duration: timedelta = timedelta(0), kind: RuleKind = RuleKind.THRESHOLD) -> AlertRule:
    return AlertRule(
        id="r1", project_id="p1", name="latency high", kind=kind, metric_name="latency",
        window=timedelta(minutes=5), comparator=Comparator.GT, threshold=100.0,
        for_duration=for_duration,
    )


def seen(minute: int, value: float | None, r: AlertRule) -> Observation:
    return Observation(T0 + minute * MINUTE, value, condition_breached(r, value))


def run(r: AlertRule, values: list[float | None]) -> tuple[RuleState, list[tuple[int, str]]]:
    state = RuleState(r.id, r.project_id)
    log = []
    for minute, value in enumerate(values):
        state, transition = advance(state, r, seen(minute, value, r))
        if transition is not None:
            log.append((minute, transition.kind.value))
    return state, log


def test_fires_at_once_without_for_duration_and_resolves() -> None:
    state, log = run(rule(), [50, 150, 160, 40, 30])
    assert log == [(1, "fired"), (3, "resolved")]
    assert state.status is RuleStatus.OK and state.since == T0 + 3 * MINUTE


def test_for_duration_goes_through_pending() -> None:
    r = rule(for_duration=2 * MINUTE)
    state, log = run(r, [150, 150, 150, 150])
    assert log == [(0, "pending"), (2, "fired")]
    assert state.status is RuleStatus.FIRING and state.since == T0 + 2 * MINUTE


def test_pending_that_clears_never_fires() -> None:
    state, log = run(rule(for_duration=3 * MINUTE), [150, 150, 50, 150])
    assert log == [(0, "pending"), (2, "cleared"), (3, "pending")]
    assert state.status is RuleStatus.PENDING and state.since == T0 + 3 * MINUTE


def test_pending_counts_from_the_first_breach() -> None:
    r = rule(for_duration=2 * MINUTE)
    state, log = run(r, [150, 150, 50, 150, 150, 150])
    assert log == [(0, "pending"), (2, "cleared"), (3, "pending"), (5, "fired")]


def test_same_observation_twice_changes_nothing() -> None:
    r = rule()
    first, transition = advance(RuleState("r1", "p1"), r, seen(1, 150, r))
    assert transition is not None and transition.kind is TransitionKind.FIRED
    again, repeated = advance(first, r, seen(1, 150, r))
    assert repeated is None and again == first
    older, stale = advance(first, r, seen(0, 10, r))
    assert stale is None and older == first


def test_firing_keeps_its_incident_and_resolving_drops_it() -> None:
    r = rule()
    state, _ = advance(RuleState("r1", "p1"), r, seen(0, 150, r))
    from attrs import evolve

    state = evolve(state, incident_id="inc-1")
    state, transition = advance(state, r, seen(1, 170, r))
    assert transition is None and state.incident_id == "inc-1" and state.last_value == 170
    state, transition = advance(state, r, seen(2, 10, r))
    assert transition is not None and transition.kind is TransitionKind.RESOLVED
    assert state.incident_id is None and transition.value == 10


def test_no_data_rule_fires_on_silence() -> None:
    r = rule(kind=RuleKind.NO_DATA)
    state, log = run(r, [5.0, None, None, 7.0])
    assert log == [(1, "fired"), (3, "resolved")]


def test_threshold_rule_is_not_breached_by_silence() -> None:
    state, log = run(rule(), [None, None])
    assert log == [] and state.status is RuleStatus.OK


@pytest.mark.parametrize(("comparator", "value", "breached"), [
    (Comparator.GT, 100.0, False), (Comparator.GTE, 100.0, True),
    (Comparator.LT, 99.0, True), (Comparator.LTE, 101.0, False),
])
def test_comparators_at_the_boundary(comparator: Comparator, value: float, breached: bool) -> None:
    assert comparator.holds(value, 100.0) is breached


@pytest.mark.parametrize(("field", "kwargs"), [
    ("window", {"window": timedelta(0)}),
    ("window", {"window": timedelta(days=2)}),
    ("for_duration", {"for_duration": timedelta(seconds=-1)}),
    ("name", {"name": "  "}),
])
def test_rule_invariants_name_the_field(field: str, kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {
        "id": "r", "project_id": "p", "name": "n", "kind": RuleKind.THRESHOLD,
        "metric_name": "m", "window": MINUTE,
    }
    with pytest.raises(ValidationError) as caught:
        AlertRule(**{**base, **kwargs})  # type: ignore[arg-type]
    assert caught.value.field == field
