"""The alert process's instruments: the alert engine, retention and compaction report
through their observer ports."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from opspilot.domain.alerts import AlertRule
from opspilot.domain.ports import (
    AlertObserver,
    CompactionObserver,
    CompactionReport,
    RetentionObserver,
)

EVALUATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


COMPACTION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class AlertTelemetry(AlertObserver, RetentionObserver, CompactionObserver):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.evaluation_duration = Histogram(
            "opspilot_alert_evaluation_duration_seconds",
            "Time to evaluate one batch of rules (one chunk of a tick)",
            buckets=EVALUATION_BUCKETS, registry=r,
        )
        self.rules_evaluated = Counter(
            "opspilot_alert_rules_evaluated_total", "Rule evaluations", registry=r
        )
        self.incidents_opened = Counter(
            "opspilot_alert_incidents_opened_total", "Incidents opened by rules", registry=r
        )
        self.incidents_resolved = Counter(
            "opspilot_alert_incidents_resolved_total",
            "Incidents resolved because their condition cleared", registry=r,
        )
        self.notifications = Counter(
            "opspilot_alert_notifications_total",
            "Notifications by channel type and final outcome (delivered, failed, timed_out)",
            ["channel_type", "outcome"], registry=r,
        )
        self.ticks = Counter(
            "opspilot_alert_ticks_total", "Ticks seen by this replica (owned or skipped)",
            ["result"], registry=r,
        )
        self.retention_runs = Counter(
            "opspilot_retention_runs_total", "Retention runs by store and outcome (ok, failed)",
            ["store", "outcome"], registry=r,
        )
        self.retention_dropped = Counter(
            "opspilot_retention_dropped_total",
            "Partitions or daily indices dropped by retention", ["store"], registry=r,
        )
        self.compaction_duration = Histogram(
            "opspilot_compaction_duration_seconds", "Time of one compaction run",
            buckets=COMPACTION_BUCKETS, registry=r,
        )
        self.compaction_points = Counter(
            "opspilot_compaction_points_total", "Hot metric points moved into blocks",
            registry=r,
        )
        self.compaction_periods = Counter(
            "opspilot_compaction_periods_total", "Periods (series-hours) compacted or merged",
            registry=r,
        )
        self.compaction_backlog = Gauge(
            "opspilot_compaction_backlog_periods",
            "Closed periods still holding hot points after the last run", registry=r,
        )

    def evaluated(self, rules: int, seconds: float) -> None:
        self.rules_evaluated.inc(rules)
        self.evaluation_duration.observe(seconds)

    def incident_opened(self, rule: AlertRule) -> None:
        self.incidents_opened.inc()

    def incident_resolved(self, rule: AlertRule) -> None:
        self.incidents_resolved.inc()

    def notified(self, channel_type: str, outcome: str) -> None:
        self.notifications.labels(channel_type, outcome).inc()

    def ticked(self, owned: bool, rules: int) -> None:
        self.ticks.labels("owned" if owned else "skipped").inc()

    def retention_ran(self, store: str, dropped: int, failed: bool) -> None:
        self.retention_runs.labels(store, "failed" if failed else "ok").inc()
        self.retention_dropped.labels(store).inc(dropped)

    def compaction_ran(self, report: CompactionReport) -> None:
        self.compaction_duration.observe(report.seconds)
        self.compaction_points.inc(report.points)
        self.compaction_periods.inc(report.periods)
        self.compaction_backlog.set(report.backlog)
