"""What a protocol request becomes: the records to publish, and the ones refused (counted in
the protocol's own unit, with the first few reasons named by field)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

import attrs

MAX_PROBLEMS = 5  # reasons quoted in a partial-success message; the count covers the rest


class MetricIn(NamedTuple):
    """A metric point's fields, as the JSON route's pydantic model has them (MetricFields)."""

    name: str
    value: float
    timestamp: datetime
    service: str | None
    tags: Mapping[str, str]


class LogIn(NamedTuple):
    """A log line's fields, as the JSON route's pydantic model has them (LogFields)."""

    level: str
    message: str
    timestamp: datetime
    service: str | None
    trace_id: str | None
    correlation_id: str | None
    context: Mapping[str, Any]


@attrs.define
class Mapped:
    records: list[Any] = attrs.Factory(list)
    rejected: int = 0  # OTLP data points / log records, or remote-write samples
    skipped: int = 0  # values that are not data (no-recorded-value flags, staleness markers)
    problems: list[tuple[str, str]] = attrs.Factory(list)
    # What the request said about metric families (MetricMetadata): type, help, unit.
    metadata: list[Any] = attrs.Factory(list)

    def refuse(self, field: str, message: str, count: int = 1) -> None:
        if count <= 0:
            return
        self.rejected += count
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append((field, message))

    def message(self) -> str:
        reasons = "; ".join(f"{field}: {message}" for field, message in self.problems)
        more = self.rejected - len(self.problems)
        return reasons + (f" (and {more} more refused)" if more > 0 else "")
