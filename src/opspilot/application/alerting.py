"""The alert engine's use cases: managing rules, channels and incidents; evaluating rules on a
tick; notifying channels; and sharing the ticks between scheduler replicas.

Guarantees:
- A rule opens at most one incident per firing episode. The episode's incident id is kept in
  the rule's state (in the RuleStore, so it survives a restart) and is derived from the rule
  id and the tick that fired it, so evaluating the same tick twice (a redelivered chunk)
  writes the same incident, never a second one.
- An incident resolved by hand while its rule still fires stays resolved: the rule's state
  keeps firing (no new incident, no more values recorded) until the condition clears; the
  next breach after that opens a new incident. Clearing after a manual resolve notifies no one.
- Notifications go out after the incident and the state are saved; each channel is tried
  with capped exponential backoff inside a time budget, concurrently with the others, and
  every attempt is recorded. A failing channel never fails the evaluation.
- Exactly one scheduler owns each tick (`SchedulerLock`); the tick's rules travel as chunks
  on the `EvaluationQueue` to whichever evaluators take them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import attrs

from opspilot.domain.alerts import (
    AlertRule,
    Channel,
    ChannelType,
    Comparator,
    DeliveryAttempt,
    Incident,
    IncidentStatus,
    Notification,
    Observation,
    RuleKind,
    RuleState,
    RuleStatus,
    Severity,
    TimelineEntry,
    Transition,
    TransitionKind,
    advance,
    condition_breached,
)
from opspilot.domain.analysis import (
    DEFAULT_ANOMALY_THRESHOLD,
    Analyzer,
    AnomalyMethod,
    AnomalyRequest,
    DataPoint,
)
from opspilot.domain.errors import (
    Conflict,
    DeliveryFailed,
    NotFound,
    OpsPilotError,
    ServiceUnavailable,
    ValidationError,
)
from opspilot.domain.metrics import (
    Aggregation,
    MetricQuery,
    Series,
    SeriesSelector,
    check_name,
    check_tags,
)
from opspilot.domain.ports import (
    ChannelStore,
    Clock,
    IdGenerator,
    IncidentStore,
    MetricStore,
    Notifier,
    RuleStore,
    SchedulerLock,
    WindowRequest,
)
from opspilot.domain.timewindow import Bucketing, TimeRange, format_duration

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
_INCIDENT_NAMESPACE = uuid.UUID("5b0c8f5e-54a4-4f7e-9a55-2f1f3c0e6a11")
_EMAIL = re.compile(r"^[^@\s,]+@[^@\s,]+$")
MAX_CHANNELS_PER_RULE = 10


# -- ports of the alert engine (declared beside the code that needs them) ------------------


@attrs.frozen
class RuleRef:
    project_id: str
    rule_id: str


@attrs.frozen
class EvaluationTask:
    """One chunk of one tick's rules. `at` is the tick's time: every evaluator of the tick
    evaluates the windows ending there."""

    tick_key: str
    at: datetime
    rules: tuple[RuleRef, ...]
    chunk: int = 0
    chunks: int = 1


class EvaluationDelivery(Protocol):
    """A task taken from the queue and not yet settled."""

    @property
    def task(self) -> EvaluationTask: ...

    @property
    def attempt(self) -> int:
        """1 the first time the task is handed out, 2 after one `retry()`, …"""
        ...

    async def ack(self) -> None: ...

    async def retry(self) -> None:
        """Hand the task back so that it is taken again (here or by another evaluator)."""
        ...


class EvaluationQueue(Protocol):
    async def publish(self, tasks: Sequence[EvaluationTask]) -> None:
        """Returns once the queue holds every task durably; raises ServiceUnavailable."""
        ...

    async def take(self, wait_seconds: float) -> EvaluationDelivery | None:
        """The next task, or None when none arrives within `wait_seconds`."""
        ...


class AlertObserver:
    """Telemetry hooks; the default does nothing. The alert process plugs Prometheus in."""

    def evaluated(self, rules: int, seconds: float) -> None: ...

    def incident_opened(self, rule: AlertRule) -> None: ...

    def incident_resolved(self, rule: AlertRule) -> None: ...

    def notified(self, channel_type: str, outcome: str) -> None:
        """`outcome`: delivered | failed | timed_out (one call per channel and event)."""

    def ticked(self, owned: bool, rules: int) -> None: ...


# -- rules, channels and incidents: the management use cases --------------------------------


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
    ) -> None:
        self._rules = rules
        self._channels = channels
        self._incidents = incidents
        self._dispatcher = dispatcher
        self._clock = clock
        self._ids = ids
        self._analyzer = analyzer

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


# -- notification ------------------------------------------------------------------------


@attrs.frozen
class RetryPolicy:
    max_attempts: int = 4
    backoff_base: float = 1.0
    backoff_cap: float = 30.0
    budget_seconds: float = 45.0  # per channel and event, attempts and waits included

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        backoff = min(self.backoff_cap, self.backoff_base * 2.0 ** (attempt - 1))
        return min(self.backoff_cap, max(backoff, retry_after or 0.0))


@attrs.frozen
class Outbound:
    """One notification owed to the channels of one rule."""

    rule: AlertRule
    notification: Notification


class NotificationDispatcher:
    """Delivers to each channel of a rule, concurrently, with retries inside a time budget;
    records every attempt. Never raises: a failure is an attempt with `ok=False`."""

    def __init__(
        self,
        notifier: Notifier,
        channels: ChannelStore,
        incidents: IncidentStore,
        clock: Clock,
        policy: RetryPolicy = RetryPolicy(),
        observer: AlertObserver | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._notifier = notifier
        self._channels = channels
        self._incidents = incidents
        self._clock = clock
        self._policy = policy
        self._observer = observer or AlertObserver()
        self._sleep = sleep

    async def dispatch(self, outbound: Sequence[Outbound]) -> list[DeliveryAttempt]:
        """Every channel of every item at once; returns each channel's last attempt."""
        jobs = [job for item in outbound for job in await self._jobs(item)]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        finals: list[DeliveryAttempt] = []
        for result in results:
            if isinstance(result, BaseException):
                log.error("notification job failed unexpectedly", exc_info=result)
            else:
                finals.append(result)
        return finals

    async def send_once(self, channel: Channel, notification: Notification) -> DeliveryAttempt:
        try:
            async with asyncio.timeout(self._policy.budget_seconds):
                return (await self._attempt(channel, notification, 1)).attempt
        except TimeoutError:
            return self._failed(channel, notification, 1, "timed out")

    async def _jobs(self, item: Outbound) -> list[Awaitable[DeliveryAttempt]]:
        jobs: list[Awaitable[DeliveryAttempt]] = []
        for channel_id in item.rule.channels:
            try:
                channel = await self._channels.get_channel(item.rule.project_id, channel_id)
            except Exception:
                log.exception("channel %s could not be read", channel_id)
                channel = None
            if channel is None:
                jobs.append(self._missing(channel_id, item.notification))
            else:
                jobs.append(self._deliver(channel, item.notification))
        return jobs

    async def _missing(self, channel_id: str, notification: Notification) -> DeliveryAttempt:
        attempt = DeliveryAttempt(
            channel_id, notification.incident_id, notification.event, 1, self._clock.now(),
            False, "channel no longer exists",
        )
        await self._record(attempt)
        return attempt

    async def _deliver(self, channel: Channel, notification: Notification) -> DeliveryAttempt:
        number, last_recorded = 0, None
        try:
            async with asyncio.timeout(self._policy.budget_seconds):
                while True:
                    number += 1
                    tried = await self._attempt(channel, notification, number)
                    await self._record(tried.attempt)
                    last_recorded = tried.attempt
                    final = number >= self._policy.max_attempts
                    if tried.attempt.ok or not tried.retryable or final:
                        outcome = "delivered" if tried.attempt.ok else "failed"
                        self._observer.notified(channel.type.value, outcome)
                        return tried.attempt
                    await self._sleep(self._policy.delay(number, tried.retry_after))
        except TimeoutError:
            self._observer.notified(channel.type.value, "timed_out")
            if last_recorded is not None and last_recorded.attempt == number:
                return last_recorded  # the budget ran out while waiting to retry
            attempt = self._failed(  # ...or during this attempt, which never answered
                channel, notification, number,
                f"no answer within the {self._policy.budget_seconds:g}s budget",
            )
            await self._record(attempt)
            return attempt

    async def _attempt(self, channel: Channel, notification: Notification, number: int) -> _Tried:
        try:
            await self._notifier.send(channel, notification)
        except DeliveryFailed as exc:
            retry_after = exc.details.get("retry_after")
            return _Tried(
                self._failed(channel, notification, number, exc.message), exc.retryable,
                float(retry_after) if isinstance(retry_after, int | float) else None,
            )
        except Exception as exc:  # a bug in a notifier must not take the tick down
            log.exception("notifier raised an untranslated error for channel %s", channel.id)
            return _Tried(self._failed(channel, notification, number, repr(exc)), False)
        attempt = DeliveryAttempt(
            channel.id, notification.incident_id, notification.event, number,
            self._clock.now(), True, "delivered",
        )
        return _Tried(attempt, False)

    def _failed(
        self, channel: Channel, notification: Notification, number: int, detail: str
    ) -> DeliveryAttempt:
        return DeliveryAttempt(
            channel.id, notification.incident_id, notification.event, number,
            self._clock.now(), False, detail[:500],
        )

    async def _record(self, attempt: DeliveryAttempt) -> None:
        if attempt.incident_id is None:
            return
        try:
            await self._incidents.record_delivery(attempt)
        except Exception:
            log.exception("could not record a delivery attempt for %s", attempt.incident_id)


@attrs.frozen
class _Tried:
    attempt: DeliveryAttempt
    retryable: bool
    retry_after: float | None = None


# -- evaluation ----------------------------------------------------------------------------


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
        hit = next((a for a in report.anomalies if a.timestamp == last_start), None)
        detail = (f"score {hit.score:.2f}, deviation {hit.deviation:+.2f} (expected "
                  f"{hit.expected!r})"
                  if hit else "last bucket within the expected range")
        return Observation(now, points[-1].value, hit is not None, detail)

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
        incident = Incident(
            id=incident_id_for(rule.id, transition.at),
            project_id=rule.project_id,
            rule_id=rule.id,
            title=f"{rule.name}: {describe_condition(rule)}",
            severity=rule.severity,
            status=IncidentStatus.OPEN,
            started_at=transition.at,
            timeline=(TimelineEntry(transition.at, "fired", seen.detail, seen.value),),
            values=() if seen.value is None else (seen.value,),
            links=investigation_links(rule, transition.at),
        )
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


# -- scheduling ----------------------------------------------------------------------------


@attrs.frozen
class TickReport:
    tick_key: str
    at: datetime
    owned: bool
    rules: int = 0
    chunks: int = 0


class AlertScheduler:
    """Owns ticks (one replica per tick) and evaluates the chunks it takes from the queue.

    Every replica runs both halves: `tick` at each interval boundary (only the lock's
    winner publishes), and `evaluate_next` in a loop (competing consumers)."""

    def __init__(
        self,
        rules: RuleStore,
        lock: SchedulerLock,
        queue: EvaluationQueue,
        evaluator: RuleEvaluator,
        clock: Clock,
        interval: timedelta = timedelta(seconds=60),
        chunk_size: int = 500,
        max_attempts: int = 3,
        observer: AlertObserver | None = None,
    ) -> None:
        if interval <= timedelta(0) or chunk_size < 1:
            raise ValueError("interval and chunk_size must be positive")
        self._rules = rules
        self._lock = lock
        self._queue = queue
        self._evaluator = evaluator
        self._clock = clock
        self.interval = interval
        self._chunk_size = chunk_size
        self._max_attempts = max_attempts
        self._stale_after = interval * 5
        self._observer = observer or AlertObserver()
        self._loaded_tick: str | None = None
        self._loaded: dict[str, dict[str, AlertRule]] = {}
        self.last_tick: TickReport | None = None

    def tick_at(self, now: datetime) -> datetime:
        return Bucketing(self.interval).floor(now)

    def tick_key(self, at: datetime) -> str:
        return f"alerts/{int(self.interval.total_seconds())}s/{at.isoformat()}"

    async def tick(self, now: datetime, force: bool = False) -> TickReport:
        """Publish the tick's chunks if this replica takes the tick (`force`: without asking
        the lock, for an operator's `opspilot alerts --once --force`)."""
        at = self.tick_at(now)
        key = self.tick_key(at)
        if not force and not await self._lock.acquire_tick(key):
            self._observer.ticked(False, 0)
            return TickReport(key, at, False)
        rules = await self._rules.enabled_rules()
        rules.sort(key=lambda r: (r.project_id, r.id))
        refs = [RuleRef(r.project_id, r.id) for r in rules]
        pieces = [refs[i:i + self._chunk_size] for i in range(0, len(refs), self._chunk_size)]
        tasks = [EvaluationTask(key, at, tuple(p), i, len(pieces)) for i, p in enumerate(pieces)]
        if tasks:
            await self._queue.publish(tasks)
        self._observer.ticked(True, len(refs))
        return TickReport(key, at, True, len(refs), len(tasks))

    async def evaluate_next(self, wait_seconds: float) -> EvaluationReport | None:
        """Take one chunk and evaluate it; None when no chunk came within `wait_seconds`."""
        delivery = await self._queue.take(wait_seconds)
        if delivery is None:
            return None
        task = delivery.task
        if self._clock.now() - task.at > self._stale_after:
            log.warning("chunk %d of %s is stale; dropped", task.chunk, task.tick_key)
            await delivery.ack()
            return EvaluationReport(skipped=len(task.rules))
        try:
            report = await self._evaluator.evaluate(await self._load(task), task.at)
        except Exception:
            log.exception("chunk %d of %s failed (attempt %d)", task.chunk, task.tick_key,
                          delivery.attempt)
            if delivery.attempt < self._max_attempts:
                await delivery.retry()
            else:  # the next tick observes again; an evaluation lost is one sample lost
                await delivery.ack()
            return EvaluationReport(skipped=len(task.rules))
        await delivery.ack()
        return report

    async def run_once(self, now: datetime, drain_timeout: float = 0.0,
                       force: bool = False) -> EvaluationReport:
        """`opspilot alerts --once`: take the tick if nobody has (or regardless, `force`),
        then evaluate every chunk waiting in the queue. `last_tick` says whether the tick
        was taken here."""
        self.last_tick = await self.tick(now, force)
        total = EvaluationReport()
        while (report := await self.evaluate_next(drain_timeout)) is not None:
            total = total + report
        return total

    async def _load(self, task: EvaluationTask) -> list[AlertRule]:
        """The enabled rules named by a chunk, read with one `list_rules` per project (and
        per tick: the chunks of a tick this replica takes share the read). A rule deleted
        or disabled since the tick is left out."""
        if self._loaded_tick != task.tick_key:
            self._loaded_tick, self._loaded = task.tick_key, {}
        found: list[AlertRule] = []
        for ref in task.rules:
            project = self._loaded.get(ref.project_id)
            if project is None:
                rules = await self._rules.list_rules(ref.project_id)
                project = self._loaded[ref.project_id] = {r.id: r for r in rules}
            rule = project.get(ref.rule_id)
            if rule is not None and rule.enabled:
                found.append(rule)
        return found
