"""OpsPilot as a library: the public, semantically versioned surface.

Everything a host needs is importable from `opspilot` itself and listed in `__all__`:

- `OpsPilot`: build OpsPilot from `Settings` (in memory by default) as an async context
  manager, then ingest (`Metric`, `Log`), query metrics and logs, find anomalies and log
  patterns, and manage alert rules and incidents (`OpsPilot.alerts`).
- `web_app`: OpsPilot's HTTP API as an aiohttp sub-application to mount under a prefix.
- The domain types those calls take and return, and the error hierarchy rooted at
  `OpsPilotError`.

Every other module (`opspilot.domain`, `opspilot.application`, `opspilot.adapters`,
`opspilot.entrypoints`, `opspilot.container`, `opspilot.settings`) is internal: it may
change in any release. See docs/embedding.md for examples and CHANGELOG.md for the history
of this surface.
"""

# `import opspilot` stays cheap (the CLI imports opspilot.entrypoints.cli through it): each
# public name is imported on first use (PEP 562). Type checkers and pdoc read the imports
# below; tests/unit/test_public_api.py checks that they, _EXPORTS and __all__ agree.
import typing as _typing

if _typing.TYPE_CHECKING:
    from opspilot.application.accounts import Credentials
    from opspilot.application.alerting.evaluation import EvaluationReport
    from opspilot.application.alerting.management import (
        AlertRules,
        IncidentView,
        RuleSpec,
        RuleView,
    )
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
        Severity,
        TimelineEntry,
    )
    from opspilot.domain.analysis import Anomaly, AnomalyMethod, LogCluster
    from opspilot.domain.errors import (
        Conflict,
        DeliveryFailed,
        Forbidden,
        LimitExceeded,
        NotFound,
        OpsPilotError,
        RateLimited,
        ServiceUnavailable,
        TransientStoreError,
        Unauthenticated,
        ValidationError,
    )
    from opspilot.domain.ingest import Accepted
    from opspilot.domain.logs import (
        CountBucket,
        Cursor,
        LogContext,
        LogLevel,
        LogPage,
        LogRecord,
        SpikeBucket,
    )
    from opspilot.domain.metrics import Aggregation, BucketValue, Histogram, HistogramBin, Series
    from opspilot.domain.ports import Clock
    from opspilot.entrypoints.embedded import Log, Metric, OpsPilot, web_app
    from opspilot.settings import Settings

_EXPORTS = {
    "AlertRules": "opspilot.application.alerting.management",
    "EvaluationReport": "opspilot.application.alerting.evaluation",
    "IncidentView": "opspilot.application.alerting.management",
    "RuleSpec": "opspilot.application.alerting.management",
    "RuleView": "opspilot.application.alerting.management",
    "Credentials": "opspilot.application.accounts",
    "AlertRule": "opspilot.domain.alerts",
    "Channel": "opspilot.domain.alerts",
    "ChannelType": "opspilot.domain.alerts",
    "Comparator": "opspilot.domain.alerts",
    "DeliveryAttempt": "opspilot.domain.alerts",
    "Incident": "opspilot.domain.alerts",
    "IncidentStatus": "opspilot.domain.alerts",
    "RuleKind": "opspilot.domain.alerts",
    "RuleState": "opspilot.domain.alerts",
    "Severity": "opspilot.domain.alerts",
    "TimelineEntry": "opspilot.domain.alerts",
    "Anomaly": "opspilot.domain.analysis",
    "AnomalyMethod": "opspilot.domain.analysis",
    "LogCluster": "opspilot.domain.analysis",
    "Conflict": "opspilot.domain.errors",
    "DeliveryFailed": "opspilot.domain.errors",
    "Forbidden": "opspilot.domain.errors",
    "LimitExceeded": "opspilot.domain.errors",
    "NotFound": "opspilot.domain.errors",
    "OpsPilotError": "opspilot.domain.errors",
    "RateLimited": "opspilot.domain.errors",
    "ServiceUnavailable": "opspilot.domain.errors",
    "TransientStoreError": "opspilot.domain.errors",
    "Unauthenticated": "opspilot.domain.errors",
    "ValidationError": "opspilot.domain.errors",
    "Accepted": "opspilot.domain.ingest",
    "CountBucket": "opspilot.domain.logs",
    "Cursor": "opspilot.domain.logs",
    "LogContext": "opspilot.domain.logs",
    "LogLevel": "opspilot.domain.logs",
    "LogPage": "opspilot.domain.logs",
    "LogRecord": "opspilot.domain.logs",
    "SpikeBucket": "opspilot.domain.logs",
    "Aggregation": "opspilot.domain.metrics",
    "BucketValue": "opspilot.domain.metrics",
    "Histogram": "opspilot.domain.metrics",
    "HistogramBin": "opspilot.domain.metrics",
    "Series": "opspilot.domain.metrics",
    "Clock": "opspilot.domain.ports",
    "Log": "opspilot.entrypoints.embedded",
    "Metric": "opspilot.entrypoints.embedded",
    "OpsPilot": "opspilot.entrypoints.embedded",
    "web_app": "opspilot.entrypoints.embedded",
    "Settings": "opspilot.settings",
}

if not _typing.TYPE_CHECKING:  # hidden from type checkers, for which a module __getattr__ would
    # make any misspelt `opspilot.Name` an Any

    def __getattr__(name: str) -> object:
        if name == "__version__":
            from importlib.metadata import PackageNotFoundError, version

            try:
                value: object = version("opspilot")
            except PackageNotFoundError:  # a source tree that was never installed
                value = "0+unknown"
        elif name in _EXPORTS:
            from importlib import import_module

            value = getattr(import_module(_EXPORTS[name]), name)
        else:
            raise AttributeError(f"module 'opspilot' has no attribute {name!r}")
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__version__: str

__all__ = [
    # building and serving
    "OpsPilot",
    "Settings",
    "Clock",
    "web_app",
    # ingestion
    "Metric",
    "Log",
    "Accepted",
    "Credentials",
    # metrics
    "Aggregation",
    "Series",
    "BucketValue",
    "Histogram",
    "HistogramBin",
    "Anomaly",
    "AnomalyMethod",
    # logs
    "LogLevel",
    "LogRecord",
    "LogPage",
    "Cursor",
    "LogContext",
    "CountBucket",
    "SpikeBucket",
    "LogCluster",
    # alerts
    "AlertRules",
    "RuleSpec",
    "RuleView",
    "RuleKind",
    "RuleState",
    "Comparator",
    "Severity",
    "AlertRule",
    "Channel",
    "ChannelType",
    "Incident",
    "IncidentView",
    "IncidentStatus",
    "TimelineEntry",
    "DeliveryAttempt",
    "EvaluationReport",
    # errors
    "OpsPilotError",
    "ValidationError",
    "LimitExceeded",
    "Unauthenticated",
    "Forbidden",
    "NotFound",
    "Conflict",
    "RateLimited",
    "ServiceUnavailable",
    "TransientStoreError",
    "DeliveryFailed",
]
