"""The NAB score, written from the NAB paper (Lavin & Ahmad, "Evaluating Real-time Anomaly
Detection Algorithms — the Numenta Anomaly Benchmark", ICMLA 2015) and its whitepaper.

Per series, each point is given the reward it would earn if it were a detection:

- inside a labelled window of width W (points), at index i with the window's last point at
  r: the scaled sigmoid σ(y) = 2 / (1 + e^{5y}) − 1 at y = −(r − i + 1) / W, divided by
  σ(−1) so that a detection on the window's first point earns exactly A_TP;
- outside every window: A_FP × σ(y) with y = (i − r) / (W − 1) measured from the end r of
  the previous window of width W (a late detection just after a window costs little), and
  −A_FP (σ = −1) before the first window or more than 3 widths after one.

A threshold turns scores into detections (score ≥ threshold). Only the first detection in a
window counts (its reward is the largest, the sigmoid falling along the window); a window
without one costs −A_FN; every detection outside windows adds its (negative) reward. The
first 15 % of each series (at most 750 points) is probationary and not scored; a window
that lies wholly inside it is not counted. Raw scores add up over the corpus and are
normalised between the null detector (no detection: −A_FN per window) and the perfect one
(a detection on each window's first point: +A_TP per window):

    score = 100 × (raw − null) / (perfect − null)

The threshold is swept once over the whole corpus (every distinct score is tried) and the
best one reported, per profile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PROBATION = 0.15
PROBATION_CAP = 750  # 15 % of 5,000 points


@dataclass(frozen=True)
class Profile:
    name: str
    tp: float
    fp: float
    fn: float


PROFILES = (
    Profile("standard", 1.0, 0.11, 1.0),
    Profile("reward_low_FP_rate", 1.0, 0.22, 1.0),
    Profile("reward_low_FN_rate", 1.0, 0.11, 2.0),
)


def scaled_sigmoid(y: np.ndarray) -> np.ndarray:
    out = 2.0 / (1.0 + np.exp(5.0 * np.minimum(y, 3.0))) - 1.0
    return np.where(y > 3.0, -1.0, out)


def probation_length(n: int) -> int:
    return int(min(math.floor(PROBATION * n), PROBATION * 5000))


@dataclass
class Labelled:
    """One series prepared for scoring: per scored point its window id (−1 outside every
    window) and its unit rewards (TP reward ÷ A_TP inside windows; σ for an outside point, to
    be multiplied by A_FP)."""

    window: np.ndarray
    reward: np.ndarray
    windows: int  # windows that contain at least one scored point
    probation: int  # points excluded at the start


def label(stamps: np.ndarray, windows: list[tuple[float, float]]) -> Labelled:
    n = len(stamps)
    window = np.full(n, -1)
    reward = np.full(n, -1.0)  # before any window: as far from one as can be
    max_tp = float(scaled_sigmoid(np.array([-1.0]))[0])
    idx = np.arange(n)
    previous: tuple[int, int] | None = None  # (right index, width) of the last window
    for k, (start, end) in enumerate(sorted(windows)):
        lo = int(np.searchsorted(stamps, start, "left"))
        hi = int(np.searchsorted(stamps, end, "right")) - 1
        if hi < lo:
            continue
        gap = slice(previous[0] + 1 if previous else 0, lo)
        if previous:
            r, width = previous
            reward[gap] = scaled_sigmoid((idx[gap] - r) / (width - 1.0))
        width = hi - lo + 1
        inside = slice(lo, hi + 1)
        window[inside] = k
        reward[inside] = scaled_sigmoid(-(hi - idx[inside] + 1) / width) / max_tp
        previous = (hi, width)
    if previous:
        r, width = previous
        tail = slice(r + 1, n)
        reward[tail] = scaled_sigmoid((idx[tail] - r) / (width - 1.0))
    skip = probation_length(n)
    counted = len(set(window[skip:][window[skip:] >= 0].tolist()))
    return Labelled(window, reward, counted, skip)


@dataclass(frozen=True)
class Swept:
    profile: str
    score: float  # normalised, 0 = null detector, 100 = perfect
    threshold: float
    tp: int  # windows detected
    fn: int
    fp: int  # detections outside windows (points)


def corpus_arrays(series: list[tuple[np.ndarray, Labelled]]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores, global window ids or −1, rewards) of every scored point of the corpus."""
    scores, windows, rewards = [], [], []
    offset = 0
    for score, lab in series:
        s = lab.probation
        w = lab.window[s:]
        scores.append(np.nan_to_num(score[s:], nan=0.0))
        windows.append(np.where(w >= 0, w + offset, -1))
        rewards.append(lab.reward[s:])
        offset += int(lab.window.max()) + 1 if (lab.window >= 0).any() else 0
    return np.concatenate(scores), np.concatenate(windows), np.concatenate(rewards)


def sweep(series: list[tuple[np.ndarray, Labelled]], profile: Profile) -> Swept:
    """The best normalised score over every threshold, one threshold for the corpus."""
    scores, window, reward = corpus_arrays(series)
    total = sum(lab.windows for _, lab in series)
    null, perfect = -profile.fn * total, profile.tp * total
    order = np.argsort(-scores, kind="stable")
    s, w, r = scores[order], window[order], reward[order]
    fp_cum = np.cumsum(np.where(w < 0, r * profile.fp, 0.0))
    fp_count = np.cumsum(w < 0)
    # A window's reward is that of its first detection (the largest); as the threshold
    # falls it changes only when a point with a larger reward enters.
    tp_delta = np.zeros(len(s))
    best_in: dict[int, float] = {}
    for i in np.flatnonzero(w >= 0):
        k, value = int(w[i]), float(r[i]) * profile.tp
        old = best_in.get(k)
        if old is None:
            tp_delta[i] = value + profile.fn
            best_in[k] = value
        elif value > old:
            tp_delta[i] = value - old
            best_in[k] = value
    detected = np.cumsum(np.isin(np.arange(len(s)), _first_hits(w)))
    raw = null + np.cumsum(tp_delta) + fp_cum
    # Only the last point of each run of equal scores is a real threshold.
    ends = np.flatnonzero(np.append(s[1:] != s[:-1], True))
    candidates = np.concatenate([[null], raw[ends]])
    best = int(np.argmax(candidates))
    if best == 0:
        return Swept(profile.name, 0.0, float(s[0]) + 1e-9 if len(s) else 1.0, 0, total, 0)
    at = ends[best - 1]
    return Swept(profile.name, 100 * (candidates[best] - null) / (perfect - null),
                 float(s[at]), int(detected[at]), total - int(detected[at]),
                 int(fp_count[at]))


def _first_hits(w: np.ndarray) -> np.ndarray:
    inside = np.flatnonzero(w >= 0)
    _, first = np.unique(w[inside], return_index=True)
    return inside[first]


def at_threshold(series: list[tuple[np.ndarray, Labelled]], profile: Profile,
                 threshold: float) -> Swept:
    """The normalised score with detections = score ≥ `threshold` (no sweep)."""
    raw, tp, fp, total = raw_score(series, profile, threshold)
    null, perfect = -profile.fn * total, profile.tp * total
    return Swept(profile.name, 100 * (raw - null) / (perfect - null), threshold, tp,
                 total - tp, fp)


def raw_score(series: list[tuple[np.ndarray, Labelled]], profile: Profile, threshold: float
              ) -> tuple[float, int, int, int]:
    """(raw score, windows detected, false detections, windows) at `threshold`."""
    raw = 0.0
    total = tp = fp = 0
    for score, lab in series:
        s = lab.probation
        hit = np.nan_to_num(score[s:], nan=0.0) >= threshold
        w, r = lab.window[s:], lab.reward[s:]
        outside = hit & (w < 0)
        raw += profile.fp * float(r[outside].sum())
        fp += int(outside.sum())
        total += lab.windows
        for k in np.unique(w[w >= 0]):
            mine = hit & (w == k)
            if mine.any():
                raw += profile.tp * float(r[mine].max())
                tp += 1
            else:
                raw -= profile.fn
    return raw, tp, fp, total
