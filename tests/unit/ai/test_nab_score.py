"""The NAB scorer of bench/anomaly_nab.py on series small enough to score by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
from nab_score import PROFILES, at_threshold, label, raw_score, scaled_sigmoid, sweep  # noqa: E402

STANDARD, LOW_FP, LOW_FN = PROFILES
N = 1000  # probation: the first 150 points
STAMPS = np.arange(N, dtype=float)
WINDOWS = [(400.0, 449.0), (700.0, 749.0)]  # 50 points each
LABELS = label(STAMPS, WINDOWS)


def detections(*at: int) -> np.ndarray:
    score = np.zeros(N)
    score[list(at)] = 1.0
    return score


def test_the_sigmoid_matches_the_paper() -> None:
    got = scaled_sigmoid(np.array([-1.0, -0.5, 0.0, 1.0, 3.5]))
    np.testing.assert_allclose(got, [0.98661, 0.84828, 0.0, -0.98661, -1.0], atol=1e-5)


def test_null_scores_zero_and_perfect_scores_a_hundred() -> None:
    assert at_threshold([(detections(), LABELS)], STANDARD, 0.5).score == 0.0
    perfect = at_threshold([(detections(400, 700), LABELS)], STANDARD, 0.5)
    assert perfect.score == pytest.approx(100.0) and (perfect.tp, perfect.fn) == (2, 0)


def test_only_the_first_detection_in_a_window_counts() -> None:
    once = raw_score([(detections(400), LABELS)], STANDARD, 0.5)
    again = raw_score([(detections(400, 410, 449), LABELS)], STANDARD, 0.5)
    assert once == again  # (1 − 1 for the missed second window, 1 tp, 0 fp, 2 windows)
    assert once[0] == pytest.approx(0.0)


def test_a_late_detection_earns_less_and_false_ones_cost_a_fp_each() -> None:
    late = raw_score([(detections(449, 700), LABELS)], STANDARD, 0.5)[0]
    # The window's last point: y = −1/50, σ(y) / σ(−1) ≈ 0.0506.
    assert late == pytest.approx(1 + float(scaled_sigmoid(np.array([-0.02]))[0]) / 0.98661,
                                 abs=1e-4)
    before = raw_score([(detections(200, 400, 700), LABELS)], LOW_FP, 0.5)
    assert before[0] == pytest.approx(2 - 0.22) and before[2] == 1


def test_probation_points_are_not_scored() -> None:
    assert raw_score([(detections(10, 400, 700), LABELS)], STANDARD, 0.5)[0] == 2.0


def test_the_sweep_finds_the_best_single_threshold() -> None:
    score = np.zeros(N)
    score[[300, 400, 700]] = [0.9, 0.8, 0.7]  # the false alarm ranks first
    best = sweep([(score, LABELS)], LOW_FN)
    assert best.threshold == 0.7 and (best.tp, best.fp) == (2, 1)
    want = at_threshold([(score, LABELS)], LOW_FN, 0.7).score
    assert best.score == pytest.approx(want)
