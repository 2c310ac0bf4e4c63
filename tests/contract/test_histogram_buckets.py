"""Property-based: MetricStore.bucket_increases over histograms whose bounds change between
exports, as OTLP exponential histograms' do (only the buckets reached are sent; a
cumulative one lowers its scale as its range grows and may restart; delta exports each
have their own range and scale). Against the observations themselves, not a second
implementation: at every reported bound on the coarsest grid of the bucket of time's
exports (where the count is knowable exactly) the count is the number of observations at
or below it that arrived in that bucket of time; `+Inf` is all of them; the reported bounds
are those of the exports that count there. On every store of the contract suite.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opspilot.domain.ingest import MetricBatch
from opspilot.domain.metrics import Aggregation, MetricPoint, MetricQuery, SeriesSelector
from opspilot.domain.timewindow import Bucketing, TimeRange

T0 = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
_examples = itertools.count()


def bound(index: int, scale: int) -> float:
    """Upper bound of bucket `index` at `scale`, computed as the OTLP mapping does."""
    return 2.0 ** ((index + 1) * 2.0 ** -scale)


def bucket_index(value: float, scale: int) -> int:
    """The bucket (base^i, base^(i+1)] holding `value`, by comparison with the bounds."""
    index = math.floor(math.log2(value) * 2 ** scale) - 1
    while bound(index, scale) < value:
        index += 1
    while index > -10_000 and bound(index - 1, scale) >= value:
        index -= 1
    return index


def on_grid(upper: float, scale: int) -> bool:
    position = math.log2(upper) * 2 ** scale
    return upper == bound(round(position) - 1, scale)


@attrs.frozen
class Export:
    minute: int
    scale: int
    new: tuple[float, ...]  # observations since the previous export (delta: its own)
    restart: bool  # cumulative: the process restarted, the counts start again from these


def cumulative_counts(values: Sequence[float], scale: int) -> dict[str, float]:
    """What an SDK sends: counts at the upper bounds of the buckets from the lowest to the
    highest one reached (empty ones in between included), then +Inf."""
    indexes = [bucket_index(v, scale) for v in values]
    counts = {repr(bound(i, scale)): float(sum(1 for v in values if v <= bound(i, scale)))
              for i in range(min(indexes), max(indexes) + 1)}
    counts["+Inf"] = float(len(values))
    return counts


observation = st.integers(1, 40_000).map(lambda i: i / 8)  # 0.125 … 5000
exports = st.lists(
    st.tuples(st.integers(0, 179), st.integers(0, 2), st.lists(observation, min_size=1,
                                                               max_size=12), st.booleans()),
    min_size=1, max_size=7, unique_by=lambda e: e[0])


def shaped(raw: list[tuple[int, int, list[float], bool]], delta: bool) -> list[Export]:
    """In time order; a cumulative histogram only lowers its scale, and a restart is only
    seen as one when its count falls (as a reset is detected), so it is kept only then."""
    ordered = sorted(raw)
    scales = [s for _, s, _, _ in ordered]
    if not delta:
        scales = sorted(scales, reverse=True)
    out, total = [], 0
    for (minute, _, new, restart), scale in zip(ordered, scales, strict=True):
        restart = not delta and restart and bool(out) and len(new) < total
        total = len(new) if restart or delta else total + len(new)
        out.append(Export(minute, scale, tuple(new), restart))
    return out


def points_of(project: str, history: list[Export], delta: bool) -> list[MetricPoint]:
    tags = {"route": "/a", **({"__temporality__": "delta"} if delta else {})}
    points, held = [], []
    for export in history:
        held = list(export.new) if delta or export.restart else [*held, *export.new]
        at = T0 + timedelta(minutes=export.minute)
        points += [MetricPoint(project, at, "h_bucket", count, "api", {**tags, "le": le})
                   for le, count in cumulative_counts(held, export.scale).items()]
    return points


def truth(history: list[Export], delta: bool, width: timedelta
          ) -> dict[datetime, tuple[list[float], set[str], int]]:
    """Per bucket of time: the observations that arrived (a cumulative series' first
    export grows from nothing known), the bounds of the exports counted there, and the
    coarsest scale among them."""
    found: dict[datetime, tuple[list[float], set[str], int]] = {}
    held: list[float] = []
    for position, export in enumerate(history):
        held = list(export.new) if delta or export.restart else [*held, *export.new]
        if not delta and position == 0:
            continue
        start = Bucketing(width).floor(T0 + timedelta(minutes=export.minute))
        arrived, bounds, scale = found.get(start, ([], set(), export.scale))
        found[start] = ([*arrived, *export.new], bounds | set(
            cumulative_counts(held, export.scale)), min(scale, export.scale))
    return found


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(raw=exports, delta=st.booleans(), width=st.sampled_from([10, 60, 1440]))
async def test_bucket_counts_hold_when_bounds_change(
    metric_store: Any, raw: list[Any], delta: bool, width: int
) -> None:
    project = f"hb{next(_examples)}"
    history = shaped(raw, delta)
    await metric_store.write_batches([MetricBatch(
        f"{project}-1", project, T0, points_of(project, history, delta))])
    bucket = timedelta(minutes=width)
    found = await metric_store.bucket_increases(MetricQuery(
        project, SeriesSelector("h_bucket"), TimeRange(T0, T0 + timedelta(days=1)),
        Aggregation.P95, Bucketing(bucket)))
    by_time: dict[datetime, dict[str, float]] = defaultdict(dict)
    for le, series in found.items():
        for at, value in zip(series.buckets, series.values, strict=True):
            by_time[at][le] = value
    expected = truth(history, delta, bucket)
    assert set(by_time) == set(expected)
    for at, (arrived, bounds, coarsest) in expected.items():
        assert set(by_time[at]) == bounds, at
        for le, value in by_time[at].items():
            upper = math.inf if le == "+Inf" else float(le)
            if upper == math.inf or on_grid(upper, coarsest):
                assert value == sum(1 for v in arrived if v <= upper), (at, le, coarsest)


def test_the_grid_helpers_agree_with_the_definition() -> None:
    assert bucket_index(1.0, 0) == -1 and bucket_index(1.5, 0) == 0 and bound(0, 0) == 2.0
    assert bucket_index(2.0, 1) == 1 and bound(1, 1) == 2.0
    assert on_grid(4.0, 0) and on_grid(bound(2, 2), 2) and not on_grid(bound(2, 2), 1)
    assert cumulative_counts([1.0, 3.0], 0) == {"1.0": 1.0, "2.0": 1.0, "4.0": 2.0,
                                                "+Inf": 2.0}

