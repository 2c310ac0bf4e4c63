"""MetricStore.select_step_values against the reference (domain.step_windows over the
in-memory store's samples): every step function, random windows, steps, ranges and offsets,
on random points (counters that reset, duplicated milliseconds, writes out of time order),
hot, compacted, and with late points merged into compacted hours (ADR 0017).

The PostgreSQL store computes the windows with numpy over packed samples; the in-memory store
runs the reference itself (so its run checks the contract's plumbing: labels, limits).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opspilot.adapters.memory.metrics import InMemoryMetricStore
from opspilot.domain.errors import LimitExceeded
from opspilot.domain.labels import (
    LabelMatcher,
    MatchOp,
    SampleLimits,
    SeriesSelection,
    millis,
)
from opspilot.domain.step_windows import STEP_FUNCTIONS, StepValues, StepWindows, step_values
from tests.contract.conftest import BACKENDS, fresh_database
from tests.contract.test_metric_tiers import COMPACT_ALL, SPAN_US, T0, as_points, batch, points

_examples = itertools.count()
T0_MS = millis(T0)

step_windows = st.builds(
    lambda function, first_s, step_s, count, range_s, offset_s, phi: StepWindows(
        function, T0_MS + first_s * 1000, step_s * 1000, count, range_s * 1000,
        offset_s * 1000, (phi,) * count if function == "quantile_over_time" else ()),
    st.sampled_from(STEP_FUNCTIONS),
    st.integers(-600, SPAN_US // 1_000_000 + 600),
    st.integers(1, 3600), st.integers(1, 40), st.integers(0, 7200), st.integers(-600, 3600),
    st.sampled_from([0.0, 0.5, 0.9, 1.0, -0.1, 1.2]),
)
matcher_sets = st.sampled_from([
    (("__name__", "=", "m"),),
    (("__name__", "=~", "m|other"), ("service", "!=", "db")),
    (("region", "=~", ".+"),),
])


def selection(project: str, matchers: Sequence[tuple[str, str, str]], windows: StepWindows,
              limits: SampleLimits = SampleLimits()) -> SeriesSelection:
    return SeriesSelection(project, [LabelMatcher(n, MatchOp(op), v) for n, op, v in matchers],
                           windows.read_start_ms, windows.read_end_ms, limits)


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def assert_same(found: StepValues, wanted: StepValues, stage: str) -> None:
    assert found.samples == wanted.samples, stage
    assert list(found.per_step) == list(wanted.per_step), stage
    assert [s.labels for s in found.series] == [s.labels for s in wanted.series], stage
    for f, w in zip(found.series, wanted.series, strict=True):
        assert all(close(a, b) for a, b in zip(f.values, w.values, strict=True)), (
            stage, f.labels, list(f.values), list(w.values))


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield InMemoryMetricStore()
        return
    async with fresh_database() as db:
        yield db.metric_store


def whole_ms(raw: list[Any]) -> list[Any]:
    """Points on whole milliseconds. Two writes of one millisecond at different microseconds
    are ordered by microsecond, not by write, once merged into a compacted block (a tier
    property select_samples shares; Prometheus never stores two samples of a millisecond)."""
    return [(us - us % 1000, *rest) for us, *rest in raw]


async def reference_answer(reference: InMemoryMetricStore, sel: SeriesSelection,
                           windows: StepWindows) -> StepValues:
    return step_values(windows, await reference.select_samples(sel))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(first=points, late=points, asked=st.lists(st.tuples(matcher_sets, step_windows),
                                                  min_size=1, max_size=6))
async def test_step_values_match_the_reference_on_every_tier(
    store: Any, first: list[Any], late: list[Any], asked: list[Any],
) -> None:
    project = f"s{next(_examples)}"
    reference = InMemoryMetricStore()
    for target in (reference, store):
        await target.write_batches([batch(f"{project}-1", project,
                                           as_points(project, whole_ms(first)))])

    async def check(stage: str) -> None:
        for matchers, windows in asked:
            sel = selection(project, matchers, windows)
            wanted = await reference_answer(reference, sel, windows)
            assert_same(await store.select_step_values(sel, windows), wanted, stage)

    await check("hot")
    if not isinstance(store, InMemoryMetricStore):
        await store.compact(COMPACT_ALL)
        await check("compacted")
    for target in (reference, store):
        await target.write_batches([batch(f"{project}-2", project,
                                           as_points(project, whole_ms(late)))])
    await check("late, hot")
    if not isinstance(store, InMemoryMetricStore):
        await store.compact(COMPACT_ALL)
        await check("late, merged")


async def test_a_counter_reset_and_extrapolation_give_prometheus_figures(store: Any) -> None:
    """Samples every 10 s: 0, 10, 20, 5 (a reset), 15; rate over [0 s, 40 s] at t = 40 s.
    Increase 20 + 20 (the value before the reset) = 35; the samples cover the whole window,
    so no extrapolation: rate 35 / 40 s."""
    project = f"s{next(_examples)}"
    raw = [(i * 10_000_000, "m", None, 0, v) for i, v in enumerate([0.0, 10.0, 20.0, 5.0, 15.0])]
    await store.write_batches([batch(project, project, as_points(project, raw))])
    for function, wanted in (("increase", 35.0), ("rate", 35.0 / 40), ("irate", 1.0),
                             ("count_over_time", 5.0), ("max_over_time", 20.0)):
        windows = StepWindows(function, T0_MS + 40_000, 1_000, 1, 40_000)
        found = await store.select_step_values(
            selection(project, (("__name__", "=", "m"),), windows), windows)
        assert [list(s.values) for s in found.series] == [[wanted]], function
        assert found.samples == 5


async def test_step_values_refuse_past_the_limits(store: Any) -> None:
    project = f"s{next(_examples)}"
    raw = [(i * 1_000_000, "m", None, i % 3, float(i)) for i in range(30)]
    await store.write_batches([batch(project, project, as_points(project, raw))])
    windows = StepWindows("sum_over_time", T0_MS + 60_000, 1_000, 3, 60_000)
    matchers = (("__name__", "=", "m"),)
    found = await store.select_step_values(selection(project, matchers, windows), windows)
    assert found.samples == 30 and len(found.series) == 3
    with pytest.raises(LimitExceeded, match="too many samples"):
        await store.select_step_values(
            selection(project, matchers, windows, SampleLimits(29, 10)), windows)
    with pytest.raises(LimitExceeded, match="more than 2 series"):
        await store.select_step_values(
            selection(project, matchers, windows, SampleLimits(30, 2)), windows)


async def test_step_values_are_scoped_to_the_project(store: Any) -> None:
    project = f"s{next(_examples)}"
    raw = [(0, "m", None, 0, 1.0)]
    await store.write_batches([batch(project, project, as_points(project, raw))])
    windows = StepWindows("last_sample", T0_MS + 1_000, 1_000, 1, 300_000)
    other = await store.select_step_values(
        selection(f"{project}-other", (("__name__", "=", "m"),), windows), windows)
    assert (other.series, other.samples, list(other.per_step)) == ([], 0, [0])
