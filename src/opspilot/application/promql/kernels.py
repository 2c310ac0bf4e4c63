"""PromQL's numeric rules, written to give Prometheus' answers (Go float semantics, its
extrapolation, its quantile interpolation), on plain lists: pure Python, no numpy (ADR 0016).

Each kernel names the Prometheus function it mirrors (promql/functions.go, quantile.go of
Prometheus 2.x), so a difference can be checked against the source line by line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

NAN = math.nan
INF = math.inf


# -- Go arithmetic: IEEE results where Python would raise --------------------------------------


def go_div(a: float, b: float) -> float:
    if b == 0.0:
        if a == 0.0 or math.isnan(a):
            return NAN
        return math.copysign(INF, a) * math.copysign(1.0, b)
    return a / b


def go_mod(a: float, b: float) -> float:
    if b == 0.0 or math.isinf(a) or math.isnan(a) or math.isnan(b):
        return NAN
    return math.fmod(a, b)


def go_pow(a: float, b: float) -> float:
    try:
        return math.pow(a, b)
    except OverflowError:
        if a < 0 and b == math.floor(b) and int(b) % 2 == 1:
            return -INF
        return INF
    except ValueError:
        if a == 0.0 and b < 0:
            return INF
        return NAN


def go_max(a: float, b: float) -> float:
    """Go's math.Max: NaN wins."""
    if math.isnan(a) or math.isnan(b):
        return NAN
    return a if a > b else b


def go_min(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b):
        return NAN
    return a if a < b else b


ARITHMETIC: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": go_div,
    "%": go_mod,
    "^": go_pow,
}
COMPARISON: dict[str, Callable[[float, float], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
}


def elem_binop(op: str, lhs: float, rhs: float) -> tuple[float, bool]:
    """vectorElemBinop: (value, keep)."""
    if op in ARITHMETIC:
        return ARITHMETIC[op](lhs, rhs), True
    return lhs, COMPARISON[op](lhs, rhs)


# -- quantiles -----------------------------------------------------------------------------


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


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """quantile.go `bucketQuantile` over (upper bound, cumulative count) pairs."""
    if math.isnan(q):
        return NAN
    if q < 0:
        return -INF
    if q > 1:
        return INF
    buckets = sorted(buckets, key=lambda b: b[0])
    if not buckets or not math.isinf(buckets[-1][0]) or buckets[-1][0] < 0:
        return NAN
    buckets = _monotonic(_coalesced(buckets))
    if len(buckets) < 2:
        return NAN
    observations = buckets[-1][1]
    if observations == 0:
        return NAN
    rank = q * observations
    b = next((i for i in range(len(buckets) - 1) if buckets[i][1] >= rank), len(buckets) - 1)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    if b == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start, end, count = 0.0, buckets[b][0], buckets[b][1]
    if b > 0:
        start = buckets[b - 1][0]
        count -= buckets[b - 1][1]
        rank -= buckets[b - 1][1]
    return start + (end - start) * (rank / count)


def _coalesced(buckets: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Buckets of one upper bound summed into one (coalesceBuckets)."""
    merged: list[tuple[float, float]] = []
    for bound, count in buckets:
        if merged and merged[-1][0] == bound:
            merged[-1] = (bound, merged[-1][1] + count)
        else:
            merged.append((bound, count))
    return merged


def _monotonic(buckets: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Counts that fall are raised to the maximum so far (ensureMonotonic)."""
    result = []
    highest = -INF
    for bound, count in buckets:
        highest = max(highest, count)
        result.append((bound, highest))
    return result


# -- range functions over one window's samples ----------------------------------------------


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


OVER_TIME: dict[str, Callable[[Sequence[float]], float]] = {
    "sum_over_time": plain_sum,
    "avg_over_time": avg_over_time,
    "min_over_time": min_over_time,
    "max_over_time": max_over_time,
    "count_over_time": lambda values: float(len(values)),
    "last_over_time": lambda values: values[-1],
}


# -- instant functions ---------------------------------------------------------------------


def round_to(value: float, to_nearest: float) -> float:
    """funcRound: half up, to a multiple of `to_nearest`."""
    inverse = go_div(1.0, to_nearest)
    return go_div(math.floor(value * inverse + 0.5), inverse)


def parse_bound(text: str) -> float | None:
    """An `le` label as Go's strconv.ParseFloat reads it; None when it is not a number."""
    try:
        return float(text.replace("_", "x") if "_" in text else text)
    except ValueError:
        return None
