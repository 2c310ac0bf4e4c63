"""Evaluating a batch of rules at one instant, and carrying out their transitions (open,
observe and resolve incidents; notify)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime

import attrs

from opspilot.application.alerting.notification import NotificationDispatcher, Outbound
from opspilot.domain.alerts import (
    AlertRule,
    Incident,
    IncidentStatus,
    Notification,
    Observation,
    RuleKind,
    RuleState,
    RuleStatus,
    Transition,
    TransitionKind,
    advance,
    anomaly_threshold,
    condition_breached,
)
from opspilot.domain.analysis import Analyzer, AnomalyMethod, AnomalyRequest, DataPoint
from opspilot.domain.errors import OpsPilotError, ServiceUnavailable, ValidationError
from opspilot.domain.metrics import MetricQuery, Series, SeriesSelector
from opspilot.domain.ports import (
    AlertObserver,
    IncidentStore,
    MetricStore,
    RuleStore,
    WindowRequest,
)
from opspilot.domain.timewindow import Bucketing, TimeRange

log = logging.getLogger(__name__)


@attrs.frozen
class EvaluationSettings:
    # Lookback of an anomaly rule, in windows: the score compares the last bucket with the
    # long-run errors before it, and the seasonal model needs a day (288 five-minute ones).
    anomaly_buckets: int = 720
    anomaly_method: AnomalyMethod = AnomalyMethod.ROBUST
    analyzer_concurrency: int = 8
    store_concurrency: int = 16


@attrs.frozen
class EvaluationReport:
    """What one evaluation did: rules evaluated and skipped, incidents fired and
    resolved (ids)."""

    evaluated: int = 0
    skipped: int = 0  # rules whose data could not be read this time
    fired: tuple[str, ...] = ()  # incident ids opened
    resolved: tuple[str, ...] = ()  # incident ids resolved

    def __add__(self, other: EvaluationReport) -> EvaluationReport:
        return EvaluationReport(
            self.evaluated + other.evaluated, self.skipped + other.skipped,
            self.fired + other.fired, self.resolved + other.resolved,
        )


def selector_of(rule: AlertRule) -> SeriesSelector:
    return SeriesSelector(rule.metric_name, rule.service_name, dict(rule.tags))


class RuleEvaluator:
    """Evaluates a batch of rules at one instant and carries out what their transitions mean.

    Reads: one `aggregate_windows` call for all threshold and no-data rules, one bucketed
    `query` call plus one analyzer call per rule for anomaly rules, one `get_states` call.
    A rule whose data cannot be read this time (store or analyzer unavailable) is skipped:
    its state is left as it was, and the next tick tries again.
    """

    def __init__(
        self,
        metrics: MetricStore,
        rules: RuleStore,
        incidents: IncidentStore,
        dispatcher: NotificationDispatcher,
        analyzer: Analyzer | None = None,
        settings: EvaluationSettings = EvaluationSettings(),
        observer: AlertObserver | None = None,
        monotonic: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._metrics = metrics
        self._rules = rules
        self._incidents = incidents
        self._dispatcher = dispatcher
        self._analyzer = analyzer
        self._settings = settings
        self._observer = observer or AlertObserver()
        self._monotonic = monotonic

    async def evaluate(self, rules: Sequence[AlertRule], now: datetime) -> EvaluationReport:
        started = self._monotonic()
        observations = await self._observe(rules, now)
        states = await self._rules.get_states([r.id for r in rules])
        outbound: list[Outbound] = []
        fired: list[str] = []
        resolved: list[str] = []
        saves: list[RuleState] = []
        for rule in rules:
            seen = observations.get(rule.id)
            if seen is None:
                continue
            before = states.get(rule.id) or RuleState(rule.id, rule.project_id)
            try:
                after = await self._apply(rule, before, seen, outbound, fired, resolved)
            except Exception:
                log.exception("rule %s could not be evaluated", rule.id)
                continue
            if after != before:
                saves.append(after)
        await self._save_states(saves)
        await self._dispatcher.dispatch(outbound)
        self._observer.evaluated(len(observations), self._monotonic() - started)
        return EvaluationReport(
            len(observations), len(rules) - len(observations), tuple(fired), tuple(resolved)
        )

    # observing -------------------------------------------------------------------------

    async def _observe(
        self, rules: Sequence[AlertRule], now: datetime
    ) -> dict[str, Observation]:
        windowed = [r for r in rules if r.kind is not RuleKind.ANOMALY]
        anomalous = [r for r in rules if r.kind is RuleKind.ANOMALY]
        found = await self._observe_windows(windowed, now)
        found.update(await self._observe_anomalies(anomalous, now))
        return found

    async def _observe_windows(
        self, rules: Sequence[AlertRule], now: datetime
    ) -> dict[str, Observation]:
        if not rules:
            return {}
        requests = [
            WindowRequest(
                r.project_id, selector_of(r), r.aggregation, TimeRange(now - r.window, now)
            )
            for r in rules
        ]
        try:
            values = await self._metrics.aggregate_windows(requests)
        except OpsPilotError as exc:
            log.warning("metric store unavailable, %d rules skipped: %s", len(rules), exc.message)
            return {}
        return {
            rule.id: Observation(
                now, got.value, condition_breached(rule, got.value),
                f"{rule.aggregation.value}={got.value!r} over {got.count} points",
            )
            for rule, got in zip(rules, values, strict=True)
        }

    async def _observe_anomalies(
        self, rules: Sequence[AlertRule], now: datetime
    ) -> dict[str, Observation]:
        if not rules:
            return {}
        if self._analyzer is None:
            log.warning("%d anomaly rules skipped: no analyzer configured", len(rules))
            return {}
        queries = [self._anomaly_query(r, now) for r in rules]
        try:
            series = await self._metrics.query(queries)
        except OpsPilotError as exc:
            log.warning("metric store unavailable, %d anomaly rules skipped: %s",
                        len(rules), exc.message)
            return {}
        gate = asyncio.Semaphore(self._settings.analyzer_concurrency)

        async def one(rule: AlertRule, query: MetricQuery, found: Series) -> Observation | None:
            async with gate:
                return await self._anomaly_observation(rule, query, found, now)

        jobs = (one(*args) for args in zip(rules, queries, series, strict=True))
        seen = await asyncio.gather(*jobs)
        return {rule.id: obs for rule, obs in zip(rules, seen, strict=True) if obs is not None}

    def _anomaly_query(self, rule: AlertRule, now: datetime) -> MetricQuery:
        bucketing = Bucketing(rule.window)
        end = bucketing.floor(now)  # the last bucket is the last complete one
        start = end - rule.window * self._settings.anomaly_buckets
        return MetricQuery(rule.project_id, selector_of(rule), TimeRange(start, end),
                           rule.aggregation, bucketing)

    async def _anomaly_observation(
        self, rule: AlertRule, query: MetricQuery, found: Series, now: datetime
    ) -> Observation | None:
        assert self._analyzer is not None
        last_start = query.window.end - rule.window
        points = [DataPoint(p.bucket, p.value) for p in found.points]
        if not points or points[-1].timestamp != last_start:
            return Observation(now, None, False, "no data in the last complete bucket")
        request = AnomalyRequest(rule.metric_name, points, self._settings.anomaly_method,
                                 anomaly_threshold(rule))
        try:
            report = await self._analyzer.detect_anomalies(request)
        except ValidationError as exc:
            return Observation(now, points[-1].value, False, f"cannot judge yet: {exc.message}")
        except ServiceUnavailable as exc:
            log.warning("analyzer unavailable, rule %s skipped: %s", rule.id, exc.message)
            return None
        # Breached while the last bucket is still part of an anomaly: from the bucket that
        # raised it (its score reached the threshold) until the likelihood falls back below
        # the threshold. A score alone marks only the first bucket (ADR 0012): the incident
        # would resolve on the next tick while the series was still off.
        hit = report.ongoing
        if hit is None:
            return Observation(now, points[-1].value, False,
                               "last bucket within the expected range")
        since = ("" if hit.timestamp == last_start
                 else f"anomalous since {hit.timestamp.isoformat()}: ")
        detail = (f"{since}score {hit.score:.2f}, deviation {hit.deviation:+.2f} (expected "
                  f"{hit.expected!r})")
        return Observation(now, points[-1].value, True, detail)

    # acting ------------------------------------------------------------------------------

    async def _apply(
        self, rule: AlertRule, before: RuleState, seen: Observation,
        outbound: list[Outbound], fired: list[str], resolved: list[str],
    ) -> RuleState:
        after, transition = advance(before, rule, seen)
        if transition is not None and transition.kind is TransitionKind.FIRED:
            incident = await self._open(rule, transition, seen)
            fired.append(incident.id)
            outbound.append(Outbound(rule, self._notification("fired", incident, transition)))
            return attrs.evolve(after, incident_id=incident.id)
        if transition is not None and transition.kind is TransitionKind.RESOLVED:
            closed = await self._close(rule, before.incident_id, transition)
            if closed is not None:
                resolved.append(closed.id)
                outbound.append(Outbound(rule, self._notification("resolved", closed, transition)))
            return after
        if after.status is RuleStatus.FIRING and after.incident_id is not None:
            await self._observe_incident(rule, after.incident_id, seen)
        return after

    async def _open(self, rule: AlertRule, transition: Transition, seen: Observation) -> Incident:
        incident = Incident.opened(rule, transition.at, seen)
        await self._incidents.save_incident(incident)
        self._observer.incident_opened(rule)
        return incident

    async def _close(
        self, rule: AlertRule, incident_id: str | None, transition: Transition
    ) -> Incident | None:
        """Resolve the episode's incident; None when there is nothing left to tell (it was
        resolved by hand already, or is gone)."""
        if incident_id is None:
            return None
        incident = await self._incidents.get_incident(rule.project_id, incident_id)
        if incident is None or incident.status is IncidentStatus.RESOLVED:
            return None
        closed = incident.observe(transition.at, transition.value).resolve(
            transition.at, "condition cleared"
        )
        await self._incidents.save_incident(closed)
        self._observer.incident_resolved(rule)
        return closed

    async def _observe_incident(self, rule: AlertRule, incident_id: str, seen: Observation) -> None:
        if seen.value is None:
            return
        incident = await self._incidents.get_incident(rule.project_id, incident_id)
        if incident is None or incident.status is IncidentStatus.RESOLVED:
            return
        await self._incidents.save_incident(incident.observe(seen.at, seen.value))

    def _notification(
        self, event: str, incident: Incident, transition: Transition
    ) -> Notification:
        return Notification(
            event, incident.project_id, incident.id, incident.rule_id, incident.title,
            incident.severity.value, transition.value, transition.at, dict(incident.links),
        )

    async def _save_states(self, states: Sequence[RuleState]) -> None:
        """All of a chunk's states in one call. If it fails they stay as they were: the
        next tick evaluates from the old states (a pending rule waits one tick longer; an
        incident is never opened twice, its id being deterministic per episode)."""
        try:
            await self._rules.save_states(states)
        except Exception as exc:
            log.error("%d rule states not saved: %r", len(states), exc)
