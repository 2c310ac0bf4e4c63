"""The Prometheus HTTP API's use cases over the metric store: instant and range queries, series,
label names and values, metadata. Answers are the `data` member of Prometheus' envelope."""

from __future__ import annotations

import asyncio
import decimal
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import promql_parser as pp

from opspilot.application.promql.evaluator import Evaluator
from opspilot.application.promql.plan import (
    LOOKBACK_MS,
    Grid,
    Key,
    SelectorKey,
    matchers_of,
    parse,
)
from opspilot.application.promql.plan import keys as read_keys
from opspilot.application.promql.values import (
    RangeArg,
    Row,
    Scalar,
    StringValue,
    Value,
    Vector,
)
from opspilot.domain.errors import LimitExceeded, QueryTimeout, ValidationError
from opspilot.domain.labels import (
    NAME_LABEL,
    LabelMatcher,
    Labels,
    MatchOp,
    SampleLimits,
    SampleSeries,
    SeriesSelection,
)
from opspilot.domain.metrics import MetricMetadata, MetricType
from opspilot.domain.ports import MetricStore
from opspilot.domain.step_windows import StepValues

ANY_NAME = (LabelMatcher(NAME_LABEL, MatchOp.REGEX, ".+"),)


@attrs.frozen
class PromqlLimits:
    """max_samples bounds the samples one query reads (all its selectors together),
    max_series the series one selector may match; max_points the steps of a range query
    (Prometheus' 11,000); max_range_ms the span of one query; timeout_s the time one query
    may take (a caller's `timeout` can only lower it)."""

    max_samples: int = 5_000_000
    max_series: int = 10_000
    max_points: int = 11_000
    max_range_ms: int = 90 * 86_400_000
    timeout_s: float = 120.0  # Prometheus' --query.timeout default


def format_value(value: float) -> str:
    """Go's strconv.FormatFloat(v, 'f', -1, 64): the shortest digits, never an exponent."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = format(decimal.Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _seconds(ms: int) -> float | int:
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


@attrs.frozen
class QueryOptions:
    """A query's own parameters besides the expression and its time (Prometheus' API):
    `lookback_ms` for instant selectors; `timeout_s`, at most the server's (None: the
    server's); `stats` as sent: any value adds `stats` to the answer, "all" per step too."""

    lookback_ms: int = LOOKBACK_MS
    timeout_s: float | None = None
    stats: str | None = None


@attrs.define
class Trace:
    """What a query did, for Prometheus' `stats`: its phases' seconds and samples read."""

    started: float
    prepared: float = 0.0
    evaluated: float = 0.0
    per_step: list[int] = attrs.Factory(list)


class PrometheusQueries:
    def __init__(self, store: MetricStore, limits: PromqlLimits,
                 timer: Callable[[], float] = time.perf_counter) -> None:
        self._store = store
        self._limits = limits
        self._timer = timer

    async def instant(self, project_id: str, query: str, time_ms: int,
                      options: QueryOptions = QueryOptions()) -> dict[str, Any]:
        trace = Trace(self._timer())
        expr = parse(query)
        grid = Grid(time_ms, 1, 1, options.lookback_ms)
        value = await self._evaluate(project_id, expr, grid, options, trace)
        data: dict[str, Any]
        if isinstance(value, Scalar):
            data = {"resultType": "scalar",
                    "result": [_seconds(time_ms), format_value(value.values[0])]}
        elif isinstance(value, StringValue):
            data = {"resultType": "string", "result": [_seconds(time_ms), value.value]}
        elif isinstance(value, RangeArg):
            data = {"resultType": "matrix", "result": _raw_matrix(value)}
        else:
            rows = sorted(value.rows, key=lambda r: r.labels)
            data = {"resultType": "vector", "result": [
                {"metric": dict(r.labels), "value": [_seconds(time_ms), format_value(v)]}
                for r in rows if (v := r.values[0]) is not None
            ]}
        return self._with_stats(data, grid, options, trace)

    async def range(self, project_id: str, query: str, start_ms: int, end_ms: int,
                    step_ms: int, options: QueryOptions = QueryOptions()) -> dict[str, Any]:
        trace = Trace(self._timer())
        grid = self._grid(start_ms, end_ms, step_ms, options.lookback_ms)
        steps = grid.steps
        expr = parse(query)
        value = await self._evaluate(project_id, expr, grid, options, trace)
        if isinstance(value, Scalar):
            value = Vector([_scalar_row(value)])
        if not isinstance(value, Vector):
            kind = "string" if isinstance(value, StringValue) else "range vector"
            raise ValidationError("query", f"invalid expression type {kind!r} for range query,"
                                  " must be Scalar or instant Vector")
        result = []
        for row in sorted(value.rows, key=lambda r: r.labels):
            points = [[_seconds(t), format_value(v)]
                      for t, v in zip(steps, row.values, strict=True) if v is not None]
            if points:
                result.append({"metric": dict(row.labels), "values": points})
        return self._with_stats({"resultType": "matrix", "result": result}, grid, options,
                                trace)

    def _with_stats(self, data: dict[str, Any], grid: Grid, options: QueryOptions,
                    trace: Trace) -> dict[str, Any]:
        """Prometheus' `stats` object (stats.QueryStats of 2.42): the timings of OpsPilot's
        phases (preparation = parse, plan and the store's reads; inner evaluation = the
        evaluator; sorting = rendering) and the samples each step read."""
        if not options.stats:
            return data
        done = self._timer()
        prepare, inner = trace.prepared - trace.started, trace.evaluated - trace.prepared
        sort = done - trace.evaluated
        samples: dict[str, Any] = {"totalQueryableSamples": sum(trace.per_step),
                                   "peakSamples": max(trace.per_step, default=0)}
        if options.stats == "all":
            samples["totalQueryableSamplesPerStep"] = [
                [_seconds(t), n] for t, n in zip(grid.steps, trace.per_step, strict=True)]
        timings = {"evalTotalTime": prepare + inner + sort, "resultSortTime": sort,
                   "queryPreparationTime": prepare, "innerEvalTime": inner,
                   "execQueueTime": 0.0, "execTotalTime": done - trace.started}
        return {**data, "stats": {"timings": timings, "samples": samples}}

    async def series(self, project_id: str, match: Sequence[str], start_ms: int, end_ms: int
                     ) -> list[dict[str, str]]:
        if not match:
            raise ValidationError("match[]", "at least one match[] selector is required")
        found = await self._labels(project_id, match, start_ms, end_ms)
        return [dict(labels) for labels in sorted(found)]

    async def label_names(self, project_id: str, match: Sequence[str], start_ms: int,
                          end_ms: int) -> list[str]:
        found = await self._labels(project_id, match, start_ms, end_ms)
        return sorted({name for labels in found for name, _ in labels})

    async def label_values(self, project_id: str, name: str, match: Sequence[str],
                           start_ms: int, end_ms: int) -> list[str]:
        found = await self._labels(project_id, match, start_ms, end_ms)
        return sorted({v for labels in found for k, v in labels if k == name})

    async def metadata(self, project_id: str, metric: str | None, start_ms: int,
                       end_ms: int) -> dict[str, list[dict[str, str]]]:
        """Each metric family with points in the span: its type, help and unit as an ingest
        protocol described it (OTLP's data kind, remote-write metadata), else as its names
        suggest (`_total` a counter; `_bucket` with `_sum`/`_count` a histogram), else
        `unknown`. A histogram's or summary's series are one family, as in Prometheus."""
        names = await self.label_values(project_id, NAME_LABEL, [], start_ms, end_ms)
        found = families(names, await self._store.metric_metadata(project_id))
        return {name: [{"type": m.type.value, "help": m.help, "unit": m.unit}]
                for name, m in sorted(found.items()) if metric is None or name == metric}

    # -- internals -------------------------------------------------------------------------

    def _grid(self, start_ms: int, end_ms: int, step_ms: int, lookback_ms: int) -> Grid:
        if step_ms <= 0:
            raise ValidationError("step", "zero or negative query resolution step widths are "
                                  "not accepted. Try a positive integer")
        if end_ms < start_ms:
            raise ValidationError("end", "end timestamp must not be before start time")
        if (end_ms - start_ms) // step_ms + 1 > self._limits.max_points:
            raise ValidationError("step", "exceeded maximum resolution of "
                                  f"{self._limits.max_points:,} points per timeseries. Try "
                                  "decreasing the query resolution (?step=XX)")
        return Grid(start_ms, step_ms, (end_ms - start_ms) // step_ms + 1, lookback_ms)

    async def _evaluate(self, project_id: str, expr: pp.Expr, grid: Grid,
                        options: QueryOptions, trace: Trace) -> Value:
        """The expression's value; the store's reads are cancelled, and the query refused,
        once the time budget is spent (a step that does not wait is checked when it ends)."""
        budget = self._limits.timeout_s
        if options.timeout_s is not None:
            budget = min(budget, options.timeout_s)
        deadline = trace.started + budget
        try:
            async with asyncio.timeout(max(0.0, deadline - self._timer())):
                value = await self._read_and_evaluate(project_id, expr, grid, trace)
        except TimeoutError:
            raise _timed_out("query execution") from None
        if self._timer() > deadline:
            raise _timed_out("expression evaluation")
        return value

    async def _read_and_evaluate(self, project_id: str, expr: pp.Expr, grid: Grid,
                                 trace: Trace) -> Value:
        keys = list(dict.fromkeys(read_keys(expr, grid)))
        for key in keys:
            start, end = _span_of(key)
            if end - start > self._limits.max_range_ms:
                raise ValidationError("query", "the query reads more than the maximum range of "
                                      f"{self._limits.max_range_ms // 86_400_000} days")
        fetched = await asyncio.gather(*(self._fetch(project_id, k) for k in keys))
        total = sum(_samples_in(found) for found in fetched)
        if total > self._limits.max_samples:
            raise LimitExceeded("query", "query processing would load too many samples into "
                                f"memory (more than {self._limits.max_samples:,})",
                                limit=self._limits.max_samples)
        trace.per_step = _per_step(fetched, grid.count)
        trace.prepared = self._timer()
        value = Evaluator(grid, dict(zip(keys, fetched, strict=True))).eval(expr)
        trace.evaluated = self._timer()
        return value

    async def _fetch(self, project_id: str, key: Key) -> StepValues | list[SampleSeries]:
        limits = SampleLimits(self._limits.max_samples, self._limits.max_series)
        start, end = _span_of(key)
        selection = SeriesSelection(project_id, key.matchers, start, end, limits)
        if isinstance(key, SelectorKey):
            return await self._store.select_samples(selection)
        return await self._store.select_step_values(selection, key.windows)

    async def _labels(self, project_id: str, match: Sequence[str], start_ms: int, end_ms: int
                      ) -> set[Labels]:
        limits = SampleLimits(self._limits.max_samples, self._limits.max_series)
        matcher_sets = [_selector_matchers(m) for m in match] or [ANY_NAME]
        found = await asyncio.gather(*(
            self._store.select_labels(SeriesSelection(project_id, ms, start_ms, end_ms, limits))
            for ms in matcher_sets))
        return {labels for group in found for labels in group}


_PARTS = ("_bucket", "_sum", "_count")


def families(names: Sequence[str], described: Mapping[str, MetricMetadata]
             ) -> dict[str, MetricMetadata]:
    """The metric families the stored `names` belong to, with their metadata."""
    stored = set(names)
    found: dict[str, MetricMetadata] = {}
    for name in names:
        base = next((name[:-len(p)] for p in _PARTS if name.endswith(p)), None)
        if name in described:
            found[name] = described[name]
        elif base is not None and base in described and described[base].type in (
                MetricType.HISTOGRAM, MetricType.SUMMARY):
            found[base] = described[base]
        elif base is not None and base + "_bucket" in stored:
            found[base] = MetricMetadata(base, MetricType.HISTOGRAM)
        elif name.endswith("_total"):
            found[name] = MetricMetadata(name, MetricType.COUNTER)
        else:
            found[name] = MetricMetadata(name, MetricType.UNKNOWN)
    return found


def _timed_out(phase: str) -> QueryTimeout:
    return QueryTimeout(f"query timed out in {phase}")


def _per_step(fetched: Sequence[StepValues | list[SampleSeries]], steps: int) -> list[int]:
    """Samples read at each step; a raw range vector (an instant query's) at its one step."""
    counts = [0] * steps
    for found in fetched:
        if isinstance(found, StepValues):
            for i, n in enumerate(found.per_step):
                counts[i] += n
        else:
            counts[0] += sum(len(s.timestamps) for s in found)
    return counts


def _span_of(key: Key) -> tuple[int, int]:
    if isinstance(key, SelectorKey):
        return key.start_ms, key.end_ms
    return key.windows.read_start_ms, key.windows.read_end_ms


def _samples_in(found: StepValues | list[SampleSeries]) -> int:
    if isinstance(found, StepValues):
        return found.samples
    return sum(len(s.timestamps) for s in found)


def _scalar_row(value: Scalar) -> Row:
    return Row((), list(value.values))


def _raw_matrix(arg: RangeArg) -> list[dict[str, Any]]:
    return [{"metric": dict(s.labels),
             "values": [[_seconds(t), format_value(v)]
                        for t, v in zip(s.timestamps, s.values, strict=True)]}
            for s in arg.series if s.timestamps]


def _selector_matchers(text: str) -> tuple[LabelMatcher, ...]:
    expr = parse(text)
    if not isinstance(expr, pp.VectorSelector):
        raise ValidationError("match[]", f"expected a series selector, got {text!r}")
    return matchers_of(expr)
