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

from importlib.metadata import PackageNotFoundError as _NotInstalled
from importlib.metadata import version as _version

from opspilot.application.alerting import (
    AlertRules,
    EvaluationReport,
    IncidentView,
    RuleSpec,
    RuleView,
)
from opspilot.application.provisioning import Credentials
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

try:
    __version__ = _version("opspilot")
except _NotInstalled:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

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
