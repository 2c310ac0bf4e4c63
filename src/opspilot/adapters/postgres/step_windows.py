"""PromQL step functions over PostgreSQL: the samples never become Python objects.

One statement per selector (series_sql.packed_statement) returns, per series, its samples as
three packed big-endian byte strings (millisecond timestamps, values, row ids), so asyncpg
hands over one `bytes` per column and series instead of a Python object per sample. numpy
reads them in place, puts them in time order (the last write of a millisecond wins, as
select_samples), finds every step's window with `searchsorted` and computes the function
for all steps at once, with the same floating-point operations, in the same order, as the
reference (domain.step_windows) — so the answers are Prometheus' to the last bit, except
sums over a window (numpy's summation order; within 1e-9 relative, as the differential test
checks) and means (a sum divided by the count where Prometheus keeps an incremental mean: the
same within rounding). Windows that contain a counter reset and quantiles fall back to the reference's
loops, on those windows only.

Measured in docs/benchmarks-promql.md: PostgreSQL's scan dominates; the windows cost
~0.05 µs a sample here, against ~3–5 µs a sample for Python objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from opspilot.domain.labels import Labels
from opspilot.domain.step_windows import (
    LAST_SAMPLE,
    StepSeries,
    StepValues,
    StepWindows,
    counter_increase,
    quantile,
)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Column = list[float | None]


PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01, where timestamptz_send counts from


def unpacked(times: bytes, values: bytes, ids: bytes) -> tuple[I64, F64]:
    """The series' samples by time, one a millisecond (floored, as domain.labels.millis; of
    equal milliseconds the highest row id, the last written, wins)."""
    t = (np.frombuffer(times, dtype=">i8").astype(np.int64) + PG_EPOCH_US) // 1000
    v = np.frombuffer(values, dtype=">f8").astype(np.float64)
    if t.size > 1 and not bool(np.all(t[1:] > t[:-1])):  # out of order, or a duplicate
        order = np.lexsort((np.frombuffer(ids, dtype=">i8"), t))
        t, v = t[order], v[order]
        last = np.ones(t.size, dtype=bool)
        last[:-1] = t[1:] != t[:-1]
        t, v = t[last], v[last]
    return t, v


def series_values(windows: StepWindows, labels: Labels, t: I64, v: F64, per_step: I64
                  ) -> StepSeries | None:
    """The series' step values (None if it has none); adds each step's samples read to
    `per_step`."""
    if t.size == 0:
        return None
    ends = np.arange(windows.count, dtype=np.int64) * windows.step_ms + (
        windows.first_ms - windows.offset_ms)
    starts = ends - windows.range_ms
    hi = np.searchsorted(t, ends, side="right")
    if windows.function == LAST_SAMPLE:
        column = _last_sample(t, v, hi, starts)
        per_step += [x is not None for x in column]
    else:
        lo = np.searchsorted(t, starts, side="left")
        per_step += hi - lo
        column = _FUNCTIONS[windows.function](windows, t, v, lo, hi, starts, ends)
    if all(x is None for x in column):
        return None
    return StepSeries(labels, column)


def _masked(values: F64, valid: npt.NDArray[np.bool_]) -> Column:
    out: list[Any] = values.tolist()
    if not bool(valid.all()):
        for i in np.flatnonzero(~valid).tolist():
            out[i] = None
    return out


def _last_sample(t: I64, v: F64, hi: I64, starts: I64) -> Column:
    i = hi - 1
    safe = np.maximum(i, 0)
    valid = (i >= 0) & (t[safe] >= starts)
    return _masked(v[safe], valid)


def _counter(windows: StepWindows, t: I64, v: F64, lo: I64, hi: I64, starts: I64, ends: I64
             ) -> Column:
    valid = hi - lo >= 2
    first = np.minimum(lo, max(t.size - 1, 0))
    last = np.maximum(hi - 1, 0)
    if windows.function == "irate":
        before = np.maximum(hi - 2, 0)
        result = np.where(v[last] < v[before], v[last], v[last] - v[before])
        with np.errstate(divide="ignore", invalid="ignore"):
            return _masked(result / ((t[last] - t[before]) / 1000), valid)
    result = v[last] - v[first]
    resets = np.zeros(t.size, dtype=np.int64)
    if t.size > 1:
        np.cumsum(v[1:] < v[:-1], out=resets[1:])
    reset_windows = np.flatnonzero(valid & (resets[last] != resets[first])).tolist()
    if reset_windows:
        values = v.tolist()
        for w in reset_windows:
            result[w] = counter_increase(values, int(lo[w]), int(hi[w]), True)
    rate = _extrapolated(t[first], v[first], t[last], hi - lo, result, starts, ends,
                         windows.function == "rate")
    return _masked(rate, valid)


def _extrapolated(first_t: I64, first_v: F64, last_t: I64, count: I64, result: F64,
                  starts: I64, ends: I64, is_rate: bool) -> F64:
    """step_windows.extrapolated_rate for every window at once (is_counter), operation for
    operation, so each value is the same double."""
    with np.errstate(divide="ignore", invalid="ignore"):
        to_start = (first_t - starts) / 1000
        to_end = (ends - last_t) / 1000
        sampled = (last_t - first_t) / 1000
        average = sampled / (count - 1)
        to_zero = sampled * (first_v / result)
        lower = (result > 0) & (first_v >= 0) & (to_zero < to_start)
        to_start = np.where(lower, to_zero, to_start)
        threshold = average * 1.1
        interval = sampled + np.where(to_start < threshold, to_start, average / 2)
        interval = interval + np.where(to_end < threshold, to_end, average / 2)
        factor = interval / sampled
        if is_rate:
            factor = factor / ((ends - starts) / 1000)
        out: F64 = result * factor
        return out


def _over_time(windows: StepWindows, t: I64, v: F64, lo: I64, hi: I64, starts: I64,
               ends: I64) -> Column:
    count = hi - lo
    valid = count > 0
    name = windows.function
    if name == "count_over_time":
        return _masked(count.astype(np.float64), valid)
    if name == "last_over_time":
        return _masked(v[np.maximum(hi - 1, 0)], valid)
    if name == "quantile_over_time":
        values = v.tolist()
        return [quantile(windows.params[i], values[a:b]) if b > a else None
                for i, (a, b) in enumerate(zip(lo.tolist(), hi.tolist(), strict=True))]
    return _masked(_reduced(name, v, lo, hi, count), valid)


def _reduced(name: str, v: F64, lo: I64, hi: I64, count: I64) -> F64:
    """sum/avg/min/max of each window [lo, hi) with ufunc.reduceat over interleaved bounds
    (empty windows are masked by the caller)."""
    padded = np.append(v, 0.0)  # reduceat needs every index < len
    bounds = np.empty(lo.size * 2, dtype=np.int64)
    bounds[0::2] = lo
    bounds[1::2] = hi
    ufunc = {"min_over_time": np.minimum, "max_over_time": np.maximum}.get(name, np.add)
    reduced: F64 = ufunc.reduceat(padded, bounds)[0::2]
    if name == "avg_over_time":
        with np.errstate(divide="ignore", invalid="ignore"):
            reduced = reduced / count
    return reduced


_FUNCTIONS = {
    "rate": _counter, "increase": _counter, "irate": _counter,
    **{name: _over_time for name in ("avg_over_time", "sum_over_time", "min_over_time",
                                     "max_over_time", "count_over_time", "last_over_time",
                                     "quantile_over_time")},
}


def step_series(windows: StepWindows, rows: Sequence[tuple[Labels, bytes, bytes, bytes]]
                ) -> StepValues:
    """Every packed series' step values and the samples they read (one a millisecond);
    rows sharing labels (a tag `service` beside the service column, an empty tag) are one
    series, their samples merged first."""
    by_labels: dict[Labels, list[tuple[bytes, bytes, bytes]]] = {}
    for labels, times, values, ids in rows:
        by_labels.setdefault(labels, []).append((times, values, ids))
    out = []
    samples = 0
    per_step = np.zeros(windows.count, dtype=np.int64)
    for labels in sorted(by_labels):
        parts = by_labels[labels]
        t, v = unpacked(*(b"".join(p[i] for p in parts) for i in range(3)))
        samples += t.size
        found = series_values(windows, labels, t, v, per_step)
        if found is not None:
            out.append(found)
    return StepValues(out, samples, per_step.tolist())
