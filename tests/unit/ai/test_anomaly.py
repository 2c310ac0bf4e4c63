"""The anomaly detector: validation, what it catches and what it leaves alone, causality,
the failure modes of the old detectors (flat and quantised series, recurring bursts), and
two NAB samples."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from opspilot.adapters.ai import anomaly
from opspilot.adapters.ai.anomaly import (
    detect,
    flagged,
    merge_duplicates,
    ongoing_since,
    trailing_rank,
    validate,
)
from opspilot.domain.analysis import DEFAULT_ANOMALY_THRESHOLD as DEFAULT
from opspilot.domain.errors import LimitExceeded, ValidationError

NAB = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "nab"
MINUTE = 60.0


def minutes(n: int) -> np.ndarray:
    return np.arange(n) * MINUTE


def noise(n: int, seed: int = 1, level: float = 50.0, sigma: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(level, sigma, n)


def events(hits: np.ndarray) -> int:
    """Runs of consecutive flagged points."""
    return int(np.sum(np.diff(hits, prepend=-2) > 1))


# validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(("stamps", "values", "method", "threshold", "field"), [
    (minutes(0), np.array([]), "robust", DEFAULT, "data_points"),
    (minutes(10), noise(10), "robust", DEFAULT, "data_points"),
    (np.repeat(minutes(10), 2), noise(20), "robust", DEFAULT, "data_points"),  # 10 distinct
    (minutes(20)[::-1].copy(), noise(20), "robust", DEFAULT, "data_points"),
    (minutes(20), np.where(np.arange(20) == 3, np.nan, 1.0), "robust", DEFAULT, "data_points"),
    (minutes(20), np.where(np.arange(20) == 3, np.inf, 1.0), "robust", DEFAULT, "data_points"),
    (minutes(20), noise(20), "z-score", DEFAULT, "method"),
    (minutes(20), noise(20), "isolation_forest", DEFAULT, "method"),
    (minutes(20), noise(20), "robust", 0.0, "threshold"),
    (minutes(20), noise(20), "robust", float("nan"), "threshold"),
    (minutes(20), noise(20), "robust", 3.0, "threshold"),  # sigmas are not scores
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
        validate(np.zeros(n), np.zeros(n), "robust", DEFAULT)
    assert caught.value.field == "data_points"


def test_duplicate_timestamps_are_one_observation_their_mean() -> None:
    stamps = np.array([0.0, 60.0, 60.0, 120.0, 180.0, 180.0, 180.0])
    values = np.array([1.0, 2.0, 4.0, 5.0, 6.0, 9.0, 0.0])
    validate(np.concatenate([stamps, minutes(20) + 240]), np.zeros(27), "robust", DEFAULT)
    distinct, means, merged = merge_duplicates(stamps, values)
    np.testing.assert_array_equal(distinct, [0.0, 60.0, 120.0, 180.0])
    np.testing.assert_array_equal(means, [1.0, 3.0, 5.0, 5.0])
    np.testing.assert_array_equal(merged, [0, 1, 1, 2, 3, 3, 3])


# the prediction ---------------------------------------------------------------------------


def test_trailing_rank_is_the_median_of_the_points_before() -> None:
    values = noise(300, seed=4)
    got = trailing_rank(values, window=61, min_history=5)
    want = [np.median(values[max(0, i - 61) : i]) if i >= 5 else np.nan for i in range(300)]
    np.testing.assert_allclose(got, want)


def test_the_daily_season_predicts_a_quiet_hour() -> None:
    stamps = np.arange(0, 10 * 86_400, 300.0)
    daily = 100 + 40 * np.sin(2 * np.pi * stamps / 86_400)
    values = daily + noise(len(stamps), seed=9, level=0, sigma=2)
    trough = int(np.argmin(daily[2500:2788])) + 2500  # a quiet hour on day 9
    values[trough] += 30  # well inside the day's range: only the season says it is odd
    scores = detect("robust", stamps, values)
    assert abs(scores.expected[trough] - daily[trough]) < 5
    hits = flagged(scores, DEFAULT)
    # The likelihood averages the last three errors: a lone spike may cross a point late.
    assert hits[0] in range(trough, trough + 3) and events(hits) == 1


# the calibrated score ---------------------------------------------------------------------


@pytest.mark.parametrize("seasonal", [False, True])
def test_scores_are_causal(seasonal: bool) -> None:
    stamps = np.arange(0, 4 * 86_400, 300.0)
    values = noise(len(stamps), seed=3)
    if seasonal:  # a daily switch the seasonal model learns (and is chosen for)
        values += np.where((stamps % 86_400) < 43_200, 0.0, 30.0)
    full = detect("robust", stamps, values)
    for cut in (100, 250, 400, 600, 1000):  # before, inside and after the first two days
        prefix = detect("robust", stamps[:cut], values[:cut])
        for got, want in zip(prefix, full, strict=True):
            np.testing.assert_allclose(got, want[:cut], equal_nan=True)


def test_scores_are_probability_like_and_zero_while_warming_up() -> None:
    scores = detect("robust", minutes(3000), noise(3000, seed=2))
    assert ((scores.score >= 0) & (scores.score <= 1)).all()
    assert not scores.score[: anomaly.DEFAULT_CALIBRATION.warm_up].any()


@pytest.mark.parametrize("sign", [1, -1])
def test_a_spike_in_noise_is_flagged_once_with_its_sign(sign: int) -> None:
    values = noise(5000, seed=5)
    values[4000] += sign * 20
    scores = detect("robust", minutes(5000), values)
    assert list(flagged(scores, DEFAULT)) == [4000]
    assert np.sign(scores.deviation[4000]) == sign


@pytest.mark.parametrize("seed", range(5))
def test_plain_noise_raises_next_to_no_alarm(seed: int) -> None:
    # The goal: at most one false-alarm event per 1,000 points at the default threshold.
    for values in (noise(5000, seed), np.random.default_rng(seed).poisson(3, 5000) * 1.0,
                   np.random.default_rng(seed).laplace(50, 1, 5000)):
        assert events(flagged(detect("robust", minutes(5000), values), DEFAULT)) <= 5


def test_a_level_shift_alarms_where_it_happens_then_is_normal() -> None:
    values = np.concatenate([noise(1000, seed=6, level=10), noise(1000, seed=7, level=20)])
    hits = flagged(detect("robust", minutes(2000), values), DEFAULT)
    assert len(hits) and 1000 <= hits[0] <= 1005
    assert not [i for i in hits if i > 1061]


def test_a_level_shift_stays_ongoing_until_the_prediction_catches_up() -> None:
    # Reported once where it starts (the score); its likelihood stays high while the
    # prediction still expects the old level, and that is how long it is "ongoing".
    values = np.concatenate([noise(1000, seed=6, level=10), noise(1000, seed=7, level=20)])
    scores = detect("robust", minutes(2000), values)
    start = int(flagged(scores, DEFAULT)[0])
    assert 1000 <= start <= 1005
    for cut in (start + 1, start + 10, 1025):
        assert ongoing_since(detect("robust", minutes(cut), values[:cut]), DEFAULT) == start
    assert ongoing_since(scores, DEFAULT) is None  # the new level is the expectation now
    assert ongoing_since(detect("robust", minutes(900), values[:900]), DEFAULT) is None


def test_a_trend_is_not_an_anomaly() -> None:
    values = np.linspace(0, 500, 3000) + noise(3000, seed=8, level=0)
    assert events(flagged(detect("robust", minutes(3000), values), DEFAULT)) <= 1


def test_a_flat_series_gives_finite_deviations_and_flags_a_real_change() -> None:
    # The old detector's scale fell to 1e-9 here, so any change scored ~1e9 sigmas.
    values = np.full(2000, 5.0)
    values[1500] = 5.1
    scores = detect("robust", minutes(2000), values)
    assert np.nanmax(np.abs(scores.deviation)) < 1e9
    assert list(flagged(scores, DEFAULT)) == [1500]


def test_quantised_counts_do_not_alarm_on_every_tick() -> None:
    # 75 % zeros and the odd one-count (a disk-write series, a quiet Twitter feed).
    rng = np.random.default_rng(13)
    values = np.where(rng.random(6000) < 0.25, rng.integers(1, 3, 6000), 0).astype(float)
    scores = detect("robust", minutes(6000), values)
    assert np.nanmax(np.abs(scores.deviation)) < 100
    assert events(flagged(scores, DEFAULT)) <= 3


def test_a_recurring_burst_stops_being_news() -> None:
    # Idle CPU at 0.1 % bursting to 97 % every 200 points: the first burst is news, the
    # series' own history of bursts makes the later ones ordinary.
    rng = np.random.default_rng(14)
    values = 0.1 + rng.random(10_000) * 0.05
    for start in range(1000, 10_000, 200):
        values[start : start + 5] = 97.0
    assert list(flagged(detect("robust", minutes(10_000), values), DEFAULT)) == [1000]


@pytest.mark.parametrize("seed", range(3))
def test_rare_recurring_bursts_stop_alarming_after_a_few(seed: int) -> None:
    # The same bursts every 500 points (1 % of the points): 38 of them. The Gaussian tail
    # alone calls each one news (the detector before this one alarmed on every burst); the
    # memory of what this series did lately stops them after the first few.
    rng = np.random.default_rng(seed)
    values = 0.1 + rng.random(20_000) * 0.05
    for start in range(1000, 20_000, 500):
        values[start : start + 5] = 97.0
    hits = flagged(detect("robust", minutes(20_000), values), DEFAULT)
    assert hits[0] == 1000
    assert len(hits) <= 5 and hits[-1] < 3000


@pytest.mark.parametrize("seed", range(5))
def test_a_lone_moderate_spike_is_flagged(seed: int) -> None:
    # 8σ, one point: diluted in the mean of the last points it scored ~0.3 before; judged
    # on its own (and as a value the series never reached) it is flagged where it happens.
    values = noise(5000, seed=seed)
    values[3000] += 8
    hits = flagged(detect("robust", minutes(5000), values), DEFAULT)
    assert 3000 in hits
    assert events(hits) <= 3  # the spike, and no more than noise allows (≤ 1 per 1,000)


def test_a_change_after_a_perfectly_flat_start_leaves_later_scores_finite() -> None:
    # No error scale exists yet at the first change (every earlier point was 0): the ratio
    # is capped so that one point cannot make every later running sum infinite.
    values = np.concatenate([np.zeros(300), noise(3000, seed=4, level=10)])
    values[2500] += 12
    scores = detect("robust", minutes(3300), values)
    assert np.isfinite(scores.score).all() and np.isfinite(scores.likelihood).all()
    assert 2500 in flagged(scores, DEFAULT)


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
    hits = stamps[flagged(detect("robust", stamps, values), DEFAULT)]
    assert ((hits >= start) & (hits <= end)).any()


@needs_nab
def test_nab_pure_noise_raises_no_alarm() -> None:
    stamps, values, windows = nab_series("artificialNoAnomaly/art_noisy.csv")
    assert windows == []
    assert flagged(detect("robust", stamps, values), DEFAULT).size == 0
