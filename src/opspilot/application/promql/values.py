"""What a PromQL expression evaluates to, held column-wise over the evaluation steps: a scalar
is one value per step, an instant vector is rows (a label set and one value or None per
step). An instant query is the one-step case of a range query."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from opspilot.domain.errors import QueryExecutionError, ValidationError
from opspilot.domain.labels import NAME_LABEL, Labels, SampleSeries


def unsupported(what: str) -> ValidationError:
    return ValidationError(
        "query", f"{what} is not supported by OpsPilot's PromQL subset (see docs/prometheus.md)"
    )


@attrs.define
class Row:
    labels: Labels
    values: list[float | None]


@attrs.define
class Vector:
    rows: list[Row]


@attrs.define
class Scalar:
    values: list[float]


@attrs.frozen
class StringValue:
    value: str


@attrs.frozen
class RangeArg:
    """A matrix selector given to a range function: the series read for its windows."""

    series: Sequence[SampleSeries]
    range_ms: int
    offset_ms: int


Value = Vector | Scalar | StringValue | RangeArg


def without_name(labels: Labels) -> Labels:
    return tuple(pair for pair in labels if pair[0] != NAME_LABEL)


def merged_rows(rows: list[Row], steps: int) -> list[Row]:
    """Rows of one label set become one, as Prometheus' per-step vectors do; two of them
    with a value at the same step is Prometheus' duplicate-labelset error."""
    by_labels: dict[Labels, Row] = {}
    for row in rows:
        seen = by_labels.get(row.labels)
        if seen is None:
            by_labels[row.labels] = row
            continue
        for i in range(steps):
            if row.values[i] is not None:
                if seen.values[i] is not None:
                    raise QueryExecutionError(
                        "vector cannot contain metrics with the same labelset",
                        {"labels": dict(row.labels)},
                    )
                seen.values[i] = row.values[i]
    return list(by_labels.values())
