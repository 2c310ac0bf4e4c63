"""The library's public surface is exactly this list (semantic versioning, CHANGELOG.md).

Adding or removing a name from `opspilot.__all__` fails here until the list below, the
CHANGELOG and the version say so.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import opspilot
from opspilot import (  # noqa: F401  (importing each name is the test)
    Accepted,
    Aggregation,
    AlertRule,
    AlertRules,
    Anomaly,
    AnomalyMethod,
    BucketValue,
    Channel,
    ChannelType,
    Clock,
    Comparator,
    Conflict,
    CountBucket,
    Credentials,
    Cursor,
    DeliveryAttempt,
    DeliveryFailed,
    EvaluationReport,
    Forbidden,
    Histogram,
    HistogramBin,
    Incident,
    IncidentStatus,
    IncidentView,
    LimitExceeded,
    Log,
    LogCluster,
    LogContext,
    LogLevel,
    LogPage,
    LogRecord,
    Metric,
    NotFound,
    OpsPilot,
    OpsPilotError,
    RateLimited,
    RuleKind,
    RuleSpec,
    RuleState,
    RuleView,
    Series,
    ServiceUnavailable,
    Settings,
    Severity,
    SpikeBucket,
    TimelineEntry,
    TransientStoreError,
    Unauthenticated,
    ValidationError,
    web_app,
)

PUBLIC = {
    "Accepted", "Aggregation", "AlertRule", "AlertRules", "Anomaly", "AnomalyMethod",
    "BucketValue", "Channel", "ChannelType", "Clock", "Comparator", "Conflict", "CountBucket",
    "Credentials", "Cursor", "DeliveryAttempt", "DeliveryFailed", "EvaluationReport",
    "Forbidden", "Histogram", "HistogramBin", "Incident", "IncidentStatus", "IncidentView",
    "LimitExceeded", "Log", "LogCluster", "LogContext", "LogLevel", "LogPage", "LogRecord",
    "Metric", "NotFound", "OpsPilot", "OpsPilotError", "RateLimited", "RuleKind", "RuleSpec",
    "RuleState", "RuleView", "Series", "ServiceUnavailable", "Settings", "Severity",
    "SpikeBucket", "TimelineEntry", "TransientStoreError", "Unauthenticated",
    "ValidationError", "web_app",
}
# The package's own subpackages and modules: importable, documented as internal.
INTERNAL_MODULES = {
    "adapters", "application", "container", "domain", "entrypoints", "settings",
}


def test_all_is_exactly_the_public_list() -> None:
    assert len(opspilot.__all__) == len(set(opspilot.__all__)), "a name listed twice"
    assert set(opspilot.__all__) == PUBLIC


def test_no_other_public_name_is_reachable_from_the_package() -> None:
    """A name added to `opspilot/__init__.py` but not to `__all__` would be public by
    accident (star imports skip it, but `opspilot.X` works)."""
    visible = {name for name in vars(opspilot) if not name.startswith("_")}
    assert visible - PUBLIC - INTERNAL_MODULES == set()


def test_the_lazy_exports_and_the_type_checkers_imports_agree() -> None:
    """`opspilot` imports each public name on first use (`_EXPORTS`); type checkers and pdoc
    read the `if TYPE_CHECKING:` imports. Both must name exactly `__all__`, from the same
    modules."""
    tree = ast.parse(Path(opspilot.__file__).read_text())
    guarded = next(node for node in tree.body if isinstance(node, ast.If)
                   and ast.unparse(node.test) == "_typing.TYPE_CHECKING")
    imported = {alias.name: node.module for node in guarded.body
                if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert imported == opspilot._EXPORTS
    assert set(imported) == PUBLIC
    for name, module in imported.items():
        assert getattr(opspilot, name).__module__ == module, name
    assert set(dir(opspilot)) >= PUBLIC


def test_every_public_name_is_documented() -> None:
    undocumented = [name for name in opspilot.__all__
                    if not inspect.getdoc(getattr(opspilot, name))]
    assert undocumented == []


def test_the_errors_are_one_hierarchy() -> None:
    errors = [getattr(opspilot, name) for name in opspilot.__all__
              if isinstance(getattr(opspilot, name), type)
              and issubclass(getattr(opspilot, name), Exception)]
    assert len(errors) == 11
    assert all(issubclass(error, OpsPilotError) for error in errors)


def test_the_package_is_typed_and_versioned() -> None:
    assert (Path(opspilot.__file__).parent / "py.typed").is_file()
    assert opspilot.__version__.count(".") == 2
