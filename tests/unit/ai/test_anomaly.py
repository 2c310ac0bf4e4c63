"""Anomaly detectors: validation, what each one catches, causality, and the NAB samples."""

from __future__ import annotations

import csv
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from opspilot.adapters.ai import anomaly
from opspilot.adapters.ai.anomaly import (
    expanding_zscore,
    flagged,
    isolation_forest,
    robust,
    trailing_rank,
    validate,
    zscore,
)
from opspilot.domain.errors import LimitExceeded, ValidationError

NAB = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "nab"
MINUTE = 60.0


def minutes(n: int) -> np.ndarray:
    return np.arange(n) * MINUTE


def noise(n: int, seed: int = 1, level: float = 50.0, sigma: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(level, sigma, n)


# validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(("stamps", "values", "method", "threshold", "field"), [
    (minutes(0), np.array([]), "robust", 3.0, "data_points"),
    (minutes(5), noise(5), "z-score", 3.0, "data_points"),
    (minutes(29), noise(29), "isolation_forest", 3.0, "data_points"),
    (minutes(20)[::-1].copy(), noise(20), "robust", 3.0, "data_points"),
    (np.concatenate([minutes(10), minutes(10)[-1:]]), noise(11), "robust", 3.0, "data_points"),
    (minutes(20), np.where(np.arange(20) == 3, np.nan, 1.0), "robust", 3.0, "data_points"),
    (minutes(20), np.where(np.arange(20) == 3, np.inf, 1.0), "z-score", 3.0, "data_points"),
    (minutes(20), noise(20), "median", 3.0, "method"),
    (minutes(20), noise(20), "robust", 0.0, "threshold"),
    (minutes(20), noise(20), "robust", float("nan"), "threshold"),
    (minutes(20), noise(20), "robust", 101.0, "threshold"),
])
def test_unusable_input_names_the_field(
    stamps: np.ndarray, values: np.ndarray, method: str, threshold: float, field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        validate(stamps, values, method, threshold)
    assert caught.value.field == field


def test_oversized_series_is_refused_before_work() -> None:
    n = anomaly.MAX_POINTS + 1
    with pytest.raises(LimitExceeded) as caught:
        validate(np.zeros(n), np.zeros(n), "robust", 3.0)
    assert caught.value.field == "data_points"
    n = anomaly.MAX_FOREST_POINTS + 1
    with pytest.raises(LimitExceeded):
        validate(np.zeros(n), np.zeros(n), "isolation_forest", 3.0)


@pytest.mark.parametrize("method", sorted(anomaly.MIN_POINTS))
def test_at_the_minimum_length_the_newest_point_is_judged(method: str) -> None:
    n = anomaly.MIN_POINTS[method]
    values = 50.0 + np.arange(n) % 5
    values[-1] = 400.0  # what an alert rule asks about: the last bucket
    validate(minutes(n), values, method, 3.0)
    assert flagged(anomaly.detect(method, minutes(n), values), 3.0)[-1] == n - 1


# z-score ----------------------------------------------------------------------------------


def test_zscore_flags_an_injected_spike_and_not_plain_noise() -> None:
    values = noise(500)
    assert list(flagged(zscore(values), 4.0)) == []
    values[321] += 12
    assert list(flagged(zscore(values), 4.0)) == [321]
    assert zscore(values).deviation[321] > 0


def test_zscore_of_a_constant_series_flags_nothing() -> None:
    scores = zscore(np.full(50, 7.0))
    assert not flagged(scores, 3.0).size and scores.expected[0] == 7.0


def test_expanding_zscore_only_looks_back() -> None:
    values = noise(300)
    changed = values.copy()
    changed[200:] += 100  # the future changes; the past's scores must not
    a, b = expanding_zscore(values), expanding_zscore(changed)
    np.testing.assert_array_equal(a.deviation[:200], b.deviation[:200])


# robust -----------------------------------------------------------------------------------


def test_trailing_rank_is_the_median_of_the_points_before() -> None:
    values = noise(300, seed=4)
    got = trailing_rank(values, window=61, min_history=5)
    want = [np.median(values[max(0, i - 61) : i]) if i >= 5 else np.nan for i in range(300)]
    np.testing.assert_allclose(got, want)


@pytest.mark.parametrize("seasonal", [False, True])
def test_robust_is_causal(seasonal: bool) -> None:
    stamps = np.arange(0, 4 * 86_400, 300.0)
    values = noise(len(stamps), seed=3)
    if seasonal:  # a daily switch the seasonal model learns (and is chosen for)
        values += np.where((stamps % 86_400) < 43_200, 0.0, 30.0)
    full = robust(stamps, values)
    for cut in (100, 250, 400, 600, 1000):  # before, inside and after the first two days
        prefix = robust(stamps[:cut], values[:cut])
        np.testing.assert_allclose(prefix.deviation, full.deviation[:cut], equal_nan=True)
        np.testing.assert_allclose(prefix.expected, full.expected[:cut], equal_nan=True)


def test_robust_flags_a_spike_and_rarely_noise() -> None:
    values = noise(5000, seed=5)
    assert flagged(robust(minutes(5000), values), 3.0).size < 0.01 * 5000
    values[4000] -= 10
    scores = robust(minutes(5000), values)
    assert 4000 in flagged(scores, 3.0) and scores.deviation[4000] < -3


def test_robust_alarms_at_a_level_shift_then_adapts() -> None:
    values = np.concatenate([noise(300, seed=6, level=10), noise(300, seed=7, level=20)])
    hits = flagged(robust(minutes(600), values), 3.0)
    assert 300 in hits
    assert not [i for i in hits if i > 300 + 61]  # within one window the shift is normal


def test_robust_copes_with_a_trend() -> None:
    values = np.linspace(0, 500, 2000) + noise(2000, seed=8, level=0)
    assert flagged(robust(minutes(2000), values), 3.0).size < 0.01 * 2000


def test_robust_uses_the_daily_season() -> None:
    stamps = np.arange(0, 10 * 86_400, 300.0)
    daily = 100 + 40 * np.sin(2 * np.pi * stamps / 86_400)
    values = daily + noise(len(stamps), seed=9, level=0, sigma=2)
    trough = int(np.argmin(daily[2500:2788])) + 2500  # a quiet hour on day 9
    values[trough] += 30  # still well inside the day's range: only the season says it's odd
    assert trough not in flagged(zscore(values), 3.0)
    scores = robust(stamps, values)
    assert trough in flagged(scores, 3.0)
    assert abs(scores.expected[trough] - daily[trough]) < 5
    late = flagged(scores, 3.0)
    assert len(late[late > 2 * 288]) < 0.01 * len(stamps)


def test_robust_on_a_flat_series_flags_any_change() -> None:
    values = np.full(100, 5.0)
    values[70] = 5.1
    assert list(flagged(robust(minutes(100), values), 3.0)) == [70]


def test_robust_on_a_million_points_is_fast() -> None:
    values = noise(1_000_000, seed=10)
    started = time.perf_counter()
    zscore(values)
    assert time.perf_counter() - started < 1.0
    started = time.perf_counter()
    robust(np.arange(1_000_000) * 86_400.0 * 30, values)  # no season: the rolling core
    assert time.perf_counter() - started < 5.0  # ~0.2 s here; generous for a noisy CI box


# isolation forest -------------------------------------------------------------------------


def test_isolation_forest_flags_spikes_with_their_sign() -> None:
    values = noise(1500, seed=11)
    values[1200] += 15
    values[1300] -= 15
    scores = isolation_forest(minutes(1500), values)
    hits = flagged(scores, 3.0)
    assert {1200, 1300} <= set(hits)
    assert scores.deviation[1200] > 0 > scores.deviation[1300]
    assert len(hits) < 0.02 * 1500


def test_isolation_forest_scores_forward_only() -> None:
    values = noise(1200, seed=12)
    full = isolation_forest(minutes(1200), values)
    changed = values.copy()
    changed[1000:] += 50
    np.testing.assert_allclose(isolation_forest(minutes(1200), changed).deviation[:1000],
                               full.deviation[:1000], equal_nan=True)
    for cut in (60, 300, 700):
        np.testing.assert_allclose(isolation_forest(minutes(cut), values[:cut]).deviation,
                                   full.deviation[:cut], equal_nan=True)


# NAB ----------------------------------------------------------------------------------------


def nab_series(name: str) -> tuple[np.ndarray, np.ndarray, list[tuple[float, float]]]:
    def epoch(text: str) -> float:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()

    with (NAB / "data" / name).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    windows = json.loads((NAB / "labels" / "combined_windows.json").read_text())[name]
    return (np.array([epoch(r["timestamp"]) for r in rows]),
            np.array([float(r["value"]) for r in rows]),
            [(epoch(a), epoch(b)) for a, b in windows])


needs_nab = pytest.mark.skipif(not NAB.is_dir(), reason=f"NAB samples not at {NAB}")


@needs_nab
def test_nab_jump_is_caught_inside_its_window() -> None:
    stamps, values, ((start, end),) = nab_series("artificialWithAnomaly/art_daily_jumpsup.csv")
    hits = stamps[flagged(robust(stamps, values), 3.0)]
    assert ((hits >= start) & (hits <= end)).any()


@needs_nab
def test_nab_pure_noise_raises_no_alarm() -> None:
    stamps, values, windows = nab_series("artificialNoAnomaly/art_noisy.csv")
    assert windows == []
    assert flagged(robust(stamps, values), 3.0).size == 0
