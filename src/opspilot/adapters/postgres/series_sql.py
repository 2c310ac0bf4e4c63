"""Prometheus selectors as SQL over the `metrics` table: label matchers become WHERE clauses,
one statement per selector returns each matching series with its samples as two arrays.

Labels map to columns: `__name__` → metric_name, `service` → service_name, any other label →
the tag of that name. An absent label reads as '' (Prometheus: `x=""` selects series without
`x`). Regular expressions are anchored as Prometheus anchors them, `^(?:re)$`, and run as
PostgreSQL AREs rather than RE2 (see docs/prometheus.md for the differences); a leading
`(?i)` moves in front of the anchor, where PostgreSQL accepts embedded options.

Both storage tiers are read (ADR 0017): `metric_sql.tiered_rows` presents the hot rows and
the decoded compacted points with the columns of `metrics`, so the matchers apply unchanged.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from opspilot.adapters.postgres.metric_sql import tiered_rows
from opspilot.adapters.postgres.step_windows import step_series
from opspilot.domain.errors import ValidationError
from opspilot.domain.labels import (
    NAME_LABEL,
    SERVICE_LABEL,
    LabelMatcher,
    Labels,
    MatchOp,
    SampleSeries,
    SeriesSelection,
    labels_of,
    too_many_samples,
    too_many_series,
)
from opspilot.domain.step_windows import StepValues, StepWindows

ROWS = tiered_rows("$1", "$2", "$3")  # _where binds project, start, end in that order
_SQL_OP = {MatchOp.EQUAL: "=", MatchOp.NOT_EQUAL: "<>", MatchOp.REGEX: "~", MatchOp.NOT_REGEX: "!~"}
_FLAGS = ("(?i)",)


def _column(matcher: LabelMatcher, args: list[Any]) -> str:
    if matcher.name == NAME_LABEL:
        return "m.metric_name"
    if matcher.name == SERVICE_LABEL:  # as domain.labels.labels_of
        return ("CASE WHEN m.tags ->> 'job' = m.service_name"
                " AND coalesce(m.tags ->> 'service', '') = '' THEN ''"
                " ELSE coalesce(m.service_name, '') END")
    args.append(matcher.name)
    return f"coalesce(m.tags ->> ${len(args)}, '')"


def _pattern(value: str) -> str:
    for flag in _FLAGS:
        if value.startswith(flag):
            return f"{flag}^(?:{value[len(flag):]})$"
    return f"^(?:{value})$"


def matcher_clauses(matchers: Sequence[LabelMatcher], args: list[Any]) -> list[str]:
    """One SQL condition per matcher over `metrics m`; values become bound parameters
    appended to `args` (never SQL text)."""
    clauses = []
    for matcher in matchers:
        column = _column(matcher, args)
        regex = matcher.op in (MatchOp.REGEX, MatchOp.NOT_REGEX)
        args.append(_pattern(matcher.value) if regex else matcher.value)
        clauses.append(f"{column} {_SQL_OP[matcher.op]} ${len(args)}")
    return clauses


def _where(selection: SeriesSelection, args: list[Any]) -> str:
    args.extend([selection.project_id, selection.start, selection.end_exclusive])
    clauses = ["m.project_id = $1", 'm."timestamp" >= $2', 'm."timestamp" < $3']
    return " AND ".join(clauses + matcher_clauses(selection.matchers, args))


def samples_statement(selection: SeriesSelection) -> tuple[str, list[Any]]:
    """At most max_samples + 1 rows are read (one more than allowed tells us to refuse);
    rows are grouped into one row per series: labels' columns, then the millisecond
    timestamps, values and row ids, in no particular order. A hash aggregate and a sort in
    Python per series (timsort: the rows mostly come in write order, i.e. time order) cost a
    third of what a sort of every row by series and time costs PostgreSQL."""
    args: list[Any] = []
    where = _where(selection, args)
    args.append(selection.limits.max_samples + 1)
    sql = f"""
SELECT s.metric_name, s.service_name, s.tags,
       array_agg(s.ms) AS times, array_agg(s.metric_value) AS values, array_agg(s.id) AS ids
FROM (SELECT m.metric_name, m.service_name, m.tags, m.id, m.metric_value,
             floor(extract(epoch FROM m."timestamp") * 1000)::int8 AS ms
      FROM {ROWS} m WHERE {where} LIMIT ${len(args)}) s
GROUP BY 1, 2, 3"""
    return sql, args


def packed_statement(selection: SeriesSelection) -> tuple[str, list[Any]]:
    """The selector's rows grouped into one row per series, its samples packed into
    big-endian byte strings for step_windows: `timestamptz_send` (int8 microseconds since
    2000-01-01, PostgreSQL's own binary form: no arithmetic per row), `float8send` values and
    `int8send` row ids. One Python object per series and column instead of one per sample.
    At most max_samples + 1 rows are read, as samples_statement."""
    args: list[Any] = []
    where = _where(selection, args)
    args.append(selection.limits.max_samples + 1)
    sql = f"""
SELECT s.metric_name, s.service_name, s.tags,
       string_agg(timestamptz_send(s.ts), '') AS times,
       string_agg(float8send(s.metric_value), '') AS values,
       string_agg(int8send(s.id), '') AS ids, count(*) AS n
FROM (SELECT m.metric_name, m.service_name, m.tags, m.id, m.metric_value, m."timestamp" AS ts
      FROM {ROWS} m WHERE {where} LIMIT ${len(args)}) s
GROUP BY 1, 2, 3"""
    return sql, args


# The planner expects a group per few rows (it cannot know how many series a selector has)
# and sorts every row by labels (jsonb comparisons: 6–7 s for 0.7 M rows measured) where a
# hash of the few groups costs a fraction; JIT compilation costs more than it saves here.
PACKED_SETTINGS = ("SET LOCAL enable_sort = off", "SET LOCAL work_mem = '256MB'",
                   "SET LOCAL jit = off")


def labels_statement(selection: SeriesSelection) -> tuple[str, list[Any]]:
    args: list[Any] = []
    where = _where(selection, args)
    args.append(selection.limits.max_series + 1)
    sql = (f"SELECT DISTINCT m.metric_name, m.service_name, m.tags FROM {ROWS} m"
           f" WHERE {where} LIMIT ${len(args)}")
    return sql, args


def _labels(row: Any) -> Labels:
    tags = row[2]
    return labels_of(row[0], row[1], orjson.loads(tags) if tags else None)


def _in_time_order(times: list[int], values: list[float], ids: list[int]
                   ) -> tuple[list[int], list[float]]:
    """Samples by time, one per millisecond: of equal timestamps the last written (highest
    row id) wins."""
    if all(map(operator.lt, times, itertools.islice(times, 1, None))):
        return times, values
    order = sorted(range(len(times)), key=lambda i: (times[i], ids[i]))
    kept_t: list[int] = []
    kept_v: list[float] = []
    for i in order:
        if kept_t and kept_t[-1] == times[i]:
            kept_v[-1] = values[i]
        else:
            kept_t.append(times[i])
            kept_v.append(values[i])
    return kept_t, kept_v


def _merged(parts: list[SampleSeries]) -> SampleSeries:
    """Rows that differ in storage but not in labels (a tag `service` beside the service
    column, an empty tag) are one Prometheus series."""
    samples: dict[int, float] = {}
    for part in parts:
        samples.update(zip(part.timestamps, part.values, strict=True))
    ordered = sorted(samples.items())
    return SampleSeries(parts[0].labels, [t for t, _ in ordered], [v for _, v in ordered])


async def fetch_samples(conn: Any, selection: SeriesSelection) -> list[SampleSeries]:
    sql, args = samples_statement(selection)
    rows = await _fetch(conn, sql, args)
    if sum(len(r[3]) for r in rows) > selection.limits.max_samples:
        raise too_many_samples(selection.limits)
    by_labels: dict[Labels, list[SampleSeries]] = {}
    for row in rows:
        labels = _labels(row)
        in_order = _in_time_order(row[3], row[4], row[5])
        by_labels.setdefault(labels, []).append(SampleSeries(labels, *in_order))
    if len(by_labels) > selection.limits.max_series:
        raise too_many_series(selection.limits)
    return [parts[0] if len(parts) == 1 else _merged(parts)
            for _, parts in sorted(by_labels.items(), key=operator.itemgetter(0))]


async def fetch_step_values(conn: Any, selection: SeriesSelection, windows: StepWindows
                            ) -> StepValues:
    sql, args = packed_statement(selection)
    async with conn.transaction(readonly=True):
        for setting in PACKED_SETTINGS:
            await conn.execute(setting)
        rows = await _fetch(conn, sql, args)
    if sum(r[6] for r in rows) > selection.limits.max_samples:
        raise too_many_samples(selection.limits)
    packed = [(_labels(r), r[3], r[4], r[5]) for r in rows]
    if len({p[0] for p in packed}) > selection.limits.max_series:
        raise too_many_series(selection.limits)
    return step_series(windows, packed)


async def fetch_labels(conn: Any, selection: SeriesSelection) -> list[Labels]:
    sql, args = labels_statement(selection)
    rows = await _fetch(conn, sql, args)
    if len(rows) > selection.limits.max_series:
        raise too_many_series(selection.limits)
    return sorted({_labels(row) for row in rows})


async def _fetch(conn: Any, sql: str, args: list[Any]) -> list[Any]:
    try:
        return list(await conn.fetch(sql, *args))
    except asyncpg.InvalidRegularExpressionError as exc:
        raise ValidationError("query", f"invalid regular expression: {exc}") from None
