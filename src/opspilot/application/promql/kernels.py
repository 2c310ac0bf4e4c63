"""PromQL's numeric rules, written to give Prometheus' answers (Go float semantics, its
extrapolation, its quantile interpolation), on plain lists: pure Python, no numpy (ADR 0016).

Each kernel names the Prometheus function it mirrors (promql/functions.go, quantile.go of
Prometheus 2.x), so a difference can be checked against the source line by line.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from opspilot.domain.step_windows import (  # the range functions' kernels live in the domain
    avg_over_time,
    max_over_time,
    min_over_time,
    plain_sum,
    quantile,
)

__all__ = ["avg_over_time", "max_over_time", "min_over_time", "plain_sum", "quantile"]

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
