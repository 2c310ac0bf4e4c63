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

The package's modules are those concepts: `management` (rules, channels, incidents),
`notification` (delivery with retries), `evaluation` (rules → incidents),
`scheduling` (ticks shared between replicas). The evaluation queue, the tick lock and
the telemetry hooks (`AlertObserver`) are domain ports (`opspilot.domain.ports`).
"""

from opspilot.application.alerting.evaluation import (
    EvaluationReport,
    EvaluationSettings,
    RuleEvaluator,
    selector_of,
)
from opspilot.application.alerting.management import (
    AlertRules,
    IncidentView,
    RuleSpec,
    RuleView,
    spec_of,
)
from opspilot.application.alerting.notification import NotificationDispatcher, Outbound, RetryPolicy
from opspilot.application.alerting.scheduling import AlertScheduler, TickReport

__all__ = [
    "AlertRules",
    "AlertScheduler",
    "EvaluationReport",
    "EvaluationSettings",
    "IncidentView",
    "NotificationDispatcher",
    "Outbound",
    "RetryPolicy",
    "RuleEvaluator",
    "RuleSpec",
    "RuleView",
    "TickReport",
    "selector_of",
    "spec_of",
]
