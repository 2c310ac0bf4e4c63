"""A mergeable percentile sketch for summaries that outlive their raw values.

Log-bucketed like DDSketch: a value v != 0 goes to key ceil(log_γ |v|) (offset to stay
positive, negated for negative values), with γ = (1 + α) / (1 - α); a bucket's
representative 2γ^k / (γ + 1) is within α of every value in it. Merging is adding counts
per key. A quantile walks the buckets in value order to the first whose cumulative count
passes rank q·(n - 1), so an estimate is within α (relative) of a value at that rank.

PostgreSQL computes the same keys and quantile in SQL (migration 0003's functions
`metric_sketch_key`, `metric_sketch_value`, `metric_sketch_quantile`); the two must stay
in step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
LOG_GAMMA = math.log(GAMMA)
# |v| from the smallest subnormal (5e-324, key -37,220) to the ingest bound 1e150 (+17,270)
KEY_OFFSET = 40_000


def sketch_key(value: float) -> int:
    if value == 0:
        return 0
    key = math.ceil(math.log(abs(value)) / LOG_GAMMA) + KEY_OFFSET
    return key if value > 0 else -key


def key_value(key: int) -> float:
    if key == 0:
        return 0.0
    magnitude = 2 * GAMMA ** (abs(key) - KEY_OFFSET) / (GAMMA + 1)
    return magnitude if key > 0 else -magnitude


def merge(sketches: Iterable[Mapping[int, int]]) -> dict[int, int]:
    merged: dict[int, int] = {}
    for sketch in sketches:
        for key, count in sketch.items():
            merged[key] = merged.get(key, 0) + count
    return merged


def sketch_of(values: Iterable[float]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for value in values:
        key = sketch_key(value)
        counts[key] = counts.get(key, 0) + 1
    return counts


def quantile(sketch: Mapping[int, int], fraction: float) -> float:
    """The estimate of the `fraction` quantile; raises ValueError on an empty sketch."""
    total = sum(sketch.values())
    if total == 0:
        raise ValueError("empty sketch")
    rank = fraction * (total - 1)
    seen = 0
    for key in sorted(sketch, key=lambda k: (key_value(k), k)):
        seen += sketch[key]
        if seen > rank:
            return key_value(key)
    raise AssertionError("unreachable: the last bucket's cumulative count is the total")
