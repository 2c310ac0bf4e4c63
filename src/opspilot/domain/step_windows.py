"""PromQL's range functions evaluated at every step of a query, over one series' samples: the
window computation a metric store performs for a query (MetricStore.select_step_values).

A step at time t reads the window [t - offset - range, t - offset], closed at both ends as in
Prometheus 2.42. `last_sample` is an instant selector: the last sample of the window, the
range being the lookback delta. This module is the reference: the in-memory store runs it as
written, and a store that computes the same thing another way (PostgreSQL, vectorised) must
give the same answers (the contract suite and the differential test against Prometheus).

The numeric rules mirror Prometheus 2.42's promql/functions.go and quantile.go line by line
(Go float semantics, extrapolatedRate, sequential sums).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from itertools import accumulate

import attrs

from opspilot.domain.errors import ValidationError
from opspilot.domain.labels import Labels, SampleSeries

NAN = math.nan
INF = math.inf

COUNTER_FUNCTIONS = ("rate", "increase", "irate")
OVER_TIME_FUNCTIONS = ("avg_over_time", "sum_over_time", "min_over_time", "max_over_time",
                       "count_over_time", "last_over_time", "quantile_over_time")
LAST_SAMPLE = "last_sample"  # an instant vector selector: the newest sample in the lookback
STEP_FUNCTIONS = (*COUNTER_FUNCTIONS, *OVER_TIME_FUNCTIONS, LAST_SAMPLE)


@attrs.frozen
class StepWindows:
    """`function` at steps first_ms + i·step_ms (i < count), each over the window
    [t - offset_ms - range_ms, t - offset_ms]; `params` holds quantile_over_time's φ, one per
    step (a scalar expression may vary with the step), and is empty otherwise."""

    function: str
    first_ms: int
    step_ms: int
    count: int
    range_ms: int
    offset_ms: int = 0
    params: tuple[float, ...] = ()

    def __attrs_post_init__(self) -> None:
        if self.function not in STEP_FUNCTIONS:
            raise ValidationError("query", f"no step function `{self.function}`")
        if self.count < 1 or self.step_ms < 1 or self.range_ms < 0:
            raise ValidationError("query", "steps need a count and a step of at least 1")
        if (self.function == "quantile_over_time") != bool(self.params):
            raise ValidationError("query", "quantile_over_time (only) takes one φ per step")
        if self.params and len(self.params) != self.count:
            raise ValidationError("query", "one φ per step")

    def window_ends(self) -> range:
        first = self.first_ms - self.offset_ms
        return range(first, first + self.count * self.step_ms, self.step_ms)

    @property
    def read_start_ms(self) -> int:
        """The first millisecond any window reads."""
        return self.first_ms - self.offset_ms - self.range_ms

    @property
    def read_end_ms(self) -> int:
        return self.first_ms - self.offset_ms + (self.count - 1) * self.step_ms


@attrs.frozen
class StepSeries:
    """One series' labels as stored and its value (None: no value) at each step."""

    labels: Labels
    values: Sequence[float | None]


@attrs.frozen
class StepValues:
    """A store's answer: the series with a value at some step; how many samples it read
    (what Prometheus' max-samples limit counts); and, per step, how many samples that step's
    windows held over all series (what Prometheus' `stats` count as queryable samples)."""

    series: list[StepSeries]
    samples: int
    per_step: Sequence[int] = ()


def step_values(windows: StepWindows, found: Sequence[SampleSeries]) -> StepValues:
    """The reference: every series' windows in pure Python."""
    series = []
    per_step = [0] * windows.count
    for s in found:
        values = series_step_values(windows, s.timestamps, s.values)
        for i, n in enumerate(window_sizes(windows, s.timestamps)):
            per_step[i] += n
        if any(v is not None for v in values):
            series.append(StepSeries(s.labels, values))
    return StepValues(series, sum(len(s.timestamps) for s in found), per_step)


def window_sizes(windows: StepWindows, times: Sequence[int]) -> list[int]:
    """The samples each step reads from one series: an instant selector its one sample (if
    any in the lookback), a range function its whole window."""
    if windows.function == LAST_SAMPLE:
        return [int(v is not None) for v in _last_samples(windows, times, times)]
    return [bisect_right(times, end) - bisect_left(times, end - windows.range_ms)
            for end in windows.window_ends()]


def series_step_values(windows: StepWindows, times: Sequence[int], values: Sequence[float]
                       ) -> list[float | None]:
    name = windows.function
    if name == LAST_SAMPLE:
        return _last_samples(windows, times, values)
    bounds = [(bisect_left(times, end - windows.range_ms), bisect_right(times, end), end)
              for end in windows.window_ends()]
    if name in COUNTER_FUNCTIONS:
        return _counter_windows(name, windows.range_ms, bounds, times, values)
    if name == "quantile_over_time":
        return [quantile(windows.params[i], values[lo:hi]) if hi > lo else None
                for i, (lo, hi, _) in enumerate(bounds)]
    fn = OVER_TIME[name]
    return [fn(values[lo:hi]) if hi > lo else None for lo, hi, _ in bounds]


def _last_samples(windows: StepWindows, times: Sequence[int], values: Sequence[float]
                  ) -> list[float | None]:
    column: list[float | None] = []  # (also called with values = times, to count)
    for end in windows.window_ends():
        i = bisect_right(times, end) - 1
        column.append(values[i] if i >= 0 and times[i] >= end - windows.range_ms else None)
    return column


def _counter_windows(name: str, range_ms: int, bounds: list[tuple[int, int, int]],
                     times: Sequence[int], values: Sequence[float]) -> list[float | None]:
    resets = [0, *accumulate(int(b < a) for a, b in zip(values, values[1:], strict=False))]
    column: list[float | None] = []
    for lo, hi, end in bounds:
        if hi - lo < 2:
            column.append(None)
        elif name == "irate":
            column.append(instant_rate(times[hi - 2:hi], values[hi - 2:hi]))
        else:
            increase = counter_increase(values, lo, hi, resets[hi - 1] != resets[lo])
            column.append(extrapolated_rate((times[lo], values[lo]), times[hi - 1], hi - lo,
                                            increase, (end - range_ms, end), True,
                                            name == "rate"))
    return column


# -- kernels (functions.go, quantile.go) -------------------------------------------------------


def counter_increase(values: Sequence[float], lo: int, hi: int, is_counter: bool) -> float:
    """last - first over values[lo:hi], plus, for a counter, the value before each reset."""
    result = values[hi - 1] - values[lo]
    if is_counter:
        previous = values[lo]
        for i in range(lo + 1, hi):
            value = values[i]
            if value < previous:
                result += previous
            previous = value
    return result


def extrapolated_rate(
    first: tuple[int, float], last_time: int, count: int, result: float,
    window: tuple[int, int], is_counter: bool, is_rate: bool,
) -> float:
    """functions.go `extrapolatedRate` (rate, increase; delta without is_counter), given the
    window's first sample, last timestamp, sample count (≥ 2) and raw increase."""
    (first_time, first_value), (range_start, range_end) = first, window
    to_start = (first_time - range_start) / 1000
    to_end = (range_end - last_time) / 1000
    sampled = (last_time - first_time) / 1000
    average = sampled / (count - 1)
    if is_counter and result > 0 and first_value >= 0:
        to_zero = sampled * (first_value / result)
        if to_zero < to_start:
            to_start = to_zero
    threshold = average * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average / 2
    interval += to_end if to_end < threshold else average / 2
    factor = interval / sampled
    if is_rate:
        factor /= (range_end - range_start) / 1000
    return result * factor


def instant_rate(times: Sequence[int], values: Sequence[float]) -> float | None:
    """functions.go `instantValue` for irate: the last two samples."""
    if len(values) < 2:
        return None
    last, previous = values[-1], values[-2]
    result = last if last < previous else last - previous
    interval = times[-1] - times[-2]
    if interval == 0:
        return None
    return result / (interval / 1000)


def plain_sum(values: Sequence[float]) -> float:
    """Sequential float addition, as Go's loop does (Python ≥3.12's sum() compensates)."""
    total = 0.0
    for value in values:
        total += value
    return total


def avg_over_time(values: Sequence[float]) -> float:
    """funcAvgOverTime: an incremental mean (it does not overflow where a sum would)."""
    mean = 0.0
    count = 0.0
    for value in values:
        count += 1
        if math.isinf(mean):
            if math.isinf(value) and (mean > 0) == (value > 0):
                continue
            if not math.isinf(value) and not math.isnan(value):
                continue
        mean += value / count - mean / count
    return mean


def max_over_time(values: Sequence[float]) -> float:
    result = values[0]
    for value in values[1:]:
        if value > result or math.isnan(result):
            result = value
    return result


def min_over_time(values: Sequence[float]) -> float:
    result = values[0]
    for value in values[1:]:
        if value < result or math.isnan(result):
            result = value
    return result


def quantile(q: float, values: Sequence[float]) -> float:
    """quantile.go `quantile`: linear interpolation between closest ranks."""
    if not values or math.isnan(q):
        return NAN
    if q < 0:
        return -INF
    if q > 1:
        return INF
    ordered = sorted(values, key=_nan_first)
    rank = q * (len(ordered) - 1)
    lower = max(0, math.floor(rank))
    upper = min(len(ordered) - 1, lower + 1)
    weight = rank - math.floor(rank)
    return ordered[lower] * (1 - weight) + ordered[upper] * weight


def _nan_first(value: float) -> tuple[int, float]:
    return (0, 0.0) if math.isnan(value) else (1, value)


OVER_TIME: dict[str, Callable[[Sequence[float]], float]] = {
    "sum_over_time": plain_sum,
    "avg_over_time": avg_over_time,
    "min_over_time": min_over_time,
    "max_over_time": max_over_time,
    "count_over_time": lambda values: float(len(values)),
    "last_over_time": lambda values: values[-1],
}
