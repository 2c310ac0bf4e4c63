"""Counter growth with resets, Prometheus' histogram_quantile, Go float labels."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from opspilot.domain.metrics import counter_increases, histogram_quantile
from opspilot.entrypoints.api.otlp.values import go_float

T0 = datetime(2024, 3, 1, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_growth_handles_a_reset_and_the_lookback() -> None:
    samples = [(at(-60), 90.0), (at(0), 100.0), (at(60), 130.0), (at(120), 5.0), (at(180), 9.0)]
    assert counter_increases(samples, at(0)) == [
        (at(0), 10.0), (at(60), 30.0), (at(120), 5.0), (at(180), 4.0)]
    assert counter_increases(samples[1:], at(0)) == [(at(60), 30.0), (at(120), 5.0),
                                                     (at(180), 4.0)]


@pytest.mark.parametrize(("q", "want"), [(0.5, 50.0), (0.95, 95.0), (0.1, 10.0), (0.0, 0.0)])
def test_histogram_quantile_interpolates_as_prometheus(q: float, want: float) -> None:
    # 1..100 observed once each into le = 0, 5, 10, 25, 50, 75, 100, 250, +Inf
    bounds = [0, 5, 10, 25, 50, 75, 100, 250, math.inf]
    buckets = [(float(b), float(min(100, max(0, int(b) if b != math.inf else 100)))) for b in bounds]
    assert histogram_quantile(q, buckets) == pytest.approx(want)


def test_histogram_quantile_edges() -> None:
    assert histogram_quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]) is None
    assert histogram_quantile(0.5, [(1.0, 3.0)]) is None  # no +Inf bucket
    assert histogram_quantile(0.99, [(1.0, 1.0), (2.0, 1.0), (math.inf, 10.0)]) == 2.0
    assert histogram_quantile(0.5, [(-1.0, 5.0), (math.inf, 6.0)]) == -1.0


@pytest.mark.parametrize(("number", "text"), [
    (0.005, "0.005"), (1.0, "1"), (2.5, "2.5"), (100000.0, "100000"), (1e6, "1e+06"),
    (1234567.0, "1.234567e+06"), (1e-5, "1e-05"), (math.inf, "+Inf"), (-3.5, "-3.5"),
])
def test_go_float_matches_prometheus_labels(number: float, text: str) -> None:
    assert go_float(number) == text
