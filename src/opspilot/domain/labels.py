"""Metric points seen as Prometheus series: label sets, label matchers and the samples one
selector reads.

A point's labels are `__name__` = its metric name, `service` = its service (absent when it has
none) and one label per tag. A tag named `service` or `__name__` cannot override the point's
own name and service. Remote-write (docs/otlp.md) stores a series' `service` label, else its
`job` label, as the service and keeps every label as a tag: so a point whose `job` tag equals
its service and that has no `service` tag gets no `service` label, and a remote-written
series goes out with exactly the labels it came in with. As in Prometheus, an absent label
and an empty one are the same thing to a matcher (`x=""` selects series without `x`).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import attrs

from opspilot.domain.errors import LimitExceeded, ValidationError
from opspilot.domain.storable import check_text

NAME_LABEL = "__name__"
SERVICE_LABEL = "service"
JOB_LABEL = "job"

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

Labels = tuple[tuple[str, str], ...]  # sorted by name; the identity of a series


def labels_of(name: str, service: str | None, tags: Mapping[str, str] | None) -> Labels:
    pairs = {k: v for k, v in (tags or {}).items() if v != ""}
    from_job = pairs.get(JOB_LABEL) == service and SERVICE_LABEL not in pairs
    pairs[NAME_LABEL] = name
    if service and not from_job:
        pairs[SERVICE_LABEL] = service
    else:
        pairs.pop(SERVICE_LABEL, None)
    return tuple(sorted(pairs.items()))


def millis(value: datetime) -> int:
    """Milliseconds since the epoch, sub-millisecond digits truncated (floored)."""
    return (value - EPOCH) // _MS


class MatchOp(enum.StrEnum):
    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"


@attrs.frozen
class LabelMatcher:
    """`name op value`. Regular expressions are anchored at both ends, as Prometheus does."""

    name: str
    op: MatchOp
    value: str
    _compiled: re.Pattern[str] | None = attrs.field(default=None, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        # Text no store can hold (NUL, lone surrogates) cannot match anything stored; refused
        # here so PostgreSQL never sees it.
        check_text(self.name, "query")
        check_text(self.value, "query")
        if self.op in (MatchOp.REGEX, MatchOp.NOT_REGEX):
            try:
                object.__setattr__(self, "_compiled", re.compile(self.value, re.DOTALL))
            except re.error as exc:
                raise ValidationError("query", f"invalid regular expression {self.value!r}: {exc}") from None

    def matches(self, value: str) -> bool:
        if self.op is MatchOp.EQUAL:
            return value == self.value
        if self.op is MatchOp.NOT_EQUAL:
            return value != self.value
        assert self._compiled is not None
        found = self._compiled.fullmatch(value) is not None
        return found if self.op is MatchOp.REGEX else not found


def matches_all(labels: Mapping[str, str], matchers: Sequence[LabelMatcher]) -> bool:
    return all(m.matches(labels.get(m.name, "")) for m in matchers)


@attrs.frozen
class SampleLimits:
    """What one selector may read: Prometheus' query.max-samples idea, per selector."""

    max_samples: int = 5_000_000
    max_series: int = 10_000


@attrs.frozen
class SeriesSelection:
    """The series of a project whose labels satisfy every matcher, with their samples in the
    closed interval [start_ms, end_ms] of milliseconds since the epoch (Prometheus 2's range
    and lookback windows include both ends; a point's timestamp counts by its millisecond,
    sub-millisecond digits truncated)."""

    project_id: str
    matchers: Sequence[LabelMatcher]
    start_ms: int
    end_ms: int
    limits: SampleLimits = SampleLimits()

    @property
    def start(self) -> datetime:
        return EPOCH + timedelta(milliseconds=self.start_ms)

    @property
    def end_exclusive(self) -> datetime:
        """The first instant after the window: the end's millisecond is inside it."""
        return EPOCH + timedelta(milliseconds=self.end_ms + 1)

    def metric_name(self) -> str | None:
        """The name an equality matcher pins, if any (stores index by name)."""
        for m in self.matchers:
            if m.name == NAME_LABEL and m.op is MatchOp.EQUAL:
                return m.value
        return None


@attrs.frozen
class SampleSeries:
    """One series: its labels and its samples, timestamps in milliseconds since the epoch
    ascending, one value each (for a duplicated timestamp the store keeps one)."""

    labels: Labels
    timestamps: Sequence[int]
    values: Sequence[float]


def too_many_samples(limits: SampleLimits) -> LimitExceeded:
    return LimitExceeded(
        "query",
        f"query processing would load too many samples into memory (more than "
        f"{limits.max_samples:,} in one selector); narrow the selector or the time range",
        limit=limits.max_samples,
    )


def too_many_series(limits: SampleLimits) -> LimitExceeded:
    return LimitExceeded(
        "query",
        f"a selector matches more than {limits.max_series:,} series; narrow it",
        limit=limits.max_series,
    )
