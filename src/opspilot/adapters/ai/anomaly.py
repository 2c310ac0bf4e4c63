"""Anomaly detectors over numpy arrays: timestamps in epoch seconds, values, both float64.

Every detector returns `Scores`: per point a signed deviation in sigmas and the value it
expected; NaN where the detector has too little history to judge the point. The design and
its measurements: docs/adr/0005-analysis-algorithms.md, docs/benchmarks-ai.md.

- `zscore`: the plain global z-score (mean and standard deviation of the whole series).
  `expanding_zscore` is its causal form (each point against the points before it).
- `robust`: causal — point i is judged from points before i only. Expected value: the median
  of the previous `window` points. Scale: how far the previous points landed from *their*
  trailing medians (the detector's own recent one-step error), normal-consistent: the larger
  of 1.4826 × the median error and the 90th-percentile error / 1.645. A level shift is
  flagged where it happens and absorbed within half a window; a trend moves the median.
  When the series samples at least four times a day (week), a seasonal model runs beside
  the plain one from the second period on: expected = median of the same phase on the
  previous periods (up to four) + the recent median of that model's residuals; its scale is
  never below the typical error at this phase on previous periods (busy hours are noisier).
  Each point takes the model whose mean error over the previous period was clearly smaller.
- `isolation_forest`: scikit-learn's IsolationForest on causal features (value, scaled first
  difference, the plain and the robust deviation, the robust scale). Train on the prefix,
  score forward: the series is cut into blocks (doubling from 256 rows up to 16,384), each
  scored by a forest fitted on the recent points before it. The forest says how isolated a point is (calibrated on its
  training points); the deviation is the robust one, scaled down where the forest does not
  rank the point among its `contamination` most isolated — the conservative method.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import ndimage
from scipy.stats import norm
from sklearn.ensemble import IsolationForest

from opspilot.domain.errors import LimitExceeded, ValidationError

MAD_SCALE = 1.4826  # MAD → standard deviation for normal noise
MEAN_AD_SCALE = 1.2533  # mean absolute deviation → standard deviation for normal noise
MAX_POINTS = 1_000_000
REFERENCE_POINTS = 4096  # training points that calibrate the forest's scores
MAX_FOREST_POINTS = 200_000  # the forest scores ~100k points/s here; bounds a request
SMALL_SAMPLE = 4.0  # scale × (1 + 4/k) for a scale made of k residuals
SHOULDER = 90.0  # percentile of past residuals behind the tail-aware scale
PHASE_NEIGHBOURS = 3  # samples around the same phase that make its typical error
SEASONAL_MARGIN = 0.8  # a seasonal model must beat the current error by this factor
# Enough points that the newest one can be flagged: among n points no |z| exceeds
# (n-1)/√n, which passes 3 at n = 11; robust's first 10 points are warm-up; the forest's
# first fit needs 19 usable rows after those.
MIN_POINTS = {"z-score": 11, "robust": 11, "isolation_forest": 30}
DAY = 86_400.0
WEEK = 7 * DAY


class Scores(NamedTuple):
    deviation: np.ndarray  # signed sigmas; NaN where not judged
    expected: np.ndarray


@dataclass(frozen=True, slots=True)
class RobustSettings:
    """One setting for every series (see docs/benchmarks-ai.md for how it was chosen).

    window: points in the trailing median and in the residual scale (odd: a true median).
    min_history: points needed before a median, and residuals before a scale, exist; so the
      first 2 × min_history points are warm-up and never flagged.
    seasonal_lags: previous periods whose same-phase values make the seasonal expectation
      (the median of those that exist).
    """

    window: int = 61
    min_history: int = 5
    seasonal_lags: int = 4


@dataclass(frozen=True, slots=True)
class ForestSettings:
    trees: int = 50
    contamination: float = 0.02
    min_block: int = 256  # first refit after this many rows, then at doubling counts …
    max_block: int = 16_384  # … up to this block size: ~20 fits for the 200,000-point cap
    seed: int = 0


# validation -------------------------------------------------------------------------------


def validate(stamps: np.ndarray, values: np.ndarray, method: str, threshold: float) -> None:
    """Raise ValidationError (naming the field) for input `method` cannot judge."""
    if method not in MIN_POINTS:
        raise ValidationError("method", f"one of {', '.join(MIN_POINTS)}")
    if not math.isfinite(threshold) or not 0 < threshold <= 100:
        raise ValidationError("threshold", "sigmas, greater than 0 and at most 100")
    n = len(values)
    if n == 0:
        raise ValidationError("data_points", "the series is empty")
    cap = MAX_FOREST_POINTS if method == "isolation_forest" else MAX_POINTS
    if n > cap:
        raise LimitExceeded("data_points", f"{method} takes at most {cap} points", limit=cap)
    if n < MIN_POINTS[method]:
        raise ValidationError("data_points", f"{method} needs at least {MIN_POINTS[method]} points")
    if not (np.isfinite(values).all() and np.isfinite(stamps).all()):
        raise ValidationError("data_points", "timestamps and values must be finite numbers")
    if n > 1 and not (np.diff(stamps) > 0).all():
        raise ValidationError("data_points", "timestamps must be strictly increasing (sorted, "
                                             "no duplicates)")


def detect(method: str, stamps: np.ndarray, values: np.ndarray) -> Scores:
    if method == "z-score":
        return zscore(values)
    if method == "robust":
        return robust(stamps, values)
    if method == "isolation_forest":
        return isolation_forest(stamps, values)
    raise ValidationError("method", f"one of {', '.join(MIN_POINTS)}")


def flagged(scores: Scores, threshold: float) -> np.ndarray:
    """Indices whose |deviation| exceeds `threshold` (NaN never does)."""
    with np.errstate(invalid="ignore"):
        return np.flatnonzero(np.abs(scores.deviation) > threshold)


# z-score ------------------------------------------------------------------------------------


def zscore(values: np.ndarray) -> Scores:
    mean = float(values.mean())
    std = float(values.std())
    expected = np.full(len(values), mean)
    if std == 0.0:
        return Scores(np.zeros(len(values)), expected)
    return Scores((values - mean) / std, expected)


def expanding_zscore(values: np.ndarray, min_history: int = 10) -> Scores:
    """Each point against the mean and deviation of the points before it (causal)."""
    n = len(values)
    shifted = values - values[0]  # keeps the running sums small: less cancellation
    count = np.arange(n, dtype=float)
    sums = np.concatenate([[0.0], np.cumsum(shifted)[:-1]])
    squares = np.concatenate([[0.0], np.cumsum(shifted * shifted)[:-1]])
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / count
        std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
        deviation = np.where(std > 0, (shifted - mean) / std, 0.0)
    deviation[: min(min_history, n)] = np.nan
    expected = mean + values[0]
    expected[: min(min_history, n)] = np.nan
    return Scores(deviation, expected)


# robust rolling median / residual MAD, seasonality-aware -------------------------------------


def robust(stamps: np.ndarray, values: np.ndarray, settings: RobustSettings | None = None
           ) -> Scores:
    s = settings or RobustSettings()
    expected, scale = _rolling(values, s)
    best = _Model.of(values, expected, scale)
    step = float(np.median(np.diff(stamps))) if len(stamps) > 1 else 1.0
    for period in seasonal_periods(stamps):
        seasonal = _seasonal_model(stamps, values, period, expected, s)
        if seasonal is not None:
            best = best.or_better(seasonal, horizon=int(round(period / step)))
    return best.scores(values)


class _Model:
    """Expected values, residual scales and one-step errors of a model (or of a per-point
    choice between models)."""

    def __init__(self, expected: np.ndarray, scale: np.ndarray, error: np.ndarray) -> None:
        self.expected = expected
        self.scale = scale
        self.error = error  # |value - expected|: what the model got wrong at each point

    @classmethod
    def of(cls, values: np.ndarray, expected: np.ndarray, scale: np.ndarray) -> _Model:
        return cls(expected, scale, np.abs(values - expected))

    def or_better(self, other: _Model, horizon: int) -> _Model:
        """Per point, `other` where its mean error over the previous `horizon` points (one
        period) was clearly smaller. A whole period is the judge because a plain median
        looks perfect on a quiet stretch and fails at every scheduled change; and only past
        errors count, so the choice is causal."""
        mine = _trailing_mean_of(self.error, horizon)
        theirs = _trailing_mean_of(other.error, horizon)
        take = np.isfinite(theirs) & np.isfinite(other.scale)
        take &= ~(mine * SEASONAL_MARGIN <= theirs)
        return _Model(np.where(take, other.expected, self.expected),
                      np.where(take, other.scale, self.scale),
                      np.where(take, other.error, self.error))

    def scores(self, values: np.ndarray) -> Scores:
        with np.errstate(invalid="ignore", divide="ignore"):
            deviation = (values - self.expected) / self.scale
        return Scores(deviation, self.expected)


def _trailing_mean_of(errors: np.ndarray, horizon: int) -> np.ndarray:
    """Mean of the finite errors among the previous `horizon` points; NaN with fewer than a
    quarter of a horizon of them."""
    finite = np.isfinite(errors)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, errors, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    idx = np.arange(len(errors))
    lo = np.maximum(idx - horizon, 0)
    n = counts[idx] - counts[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n >= max(horizon // 4, 1), (sums[idx] - sums[lo]) / n, np.nan)


def _rolling(series: np.ndarray, s: RobustSettings) -> tuple[np.ndarray, np.ndarray]:
    """(trailing median, residual scale) per point, each from strictly earlier points."""
    median = trailing_rank(series, s.window, s.min_history)
    residual = np.abs(series - median)
    return median, _residual_scale(residual, median, s)


def _residual_scale(residual: np.ndarray, median: np.ndarray, s: RobustSettings
                    ) -> np.ndarray:
    """Normal-consistent scale of the previous residuals: the larger of 1.4826 × their median
    (the core) and their 90th percentile / 1.645 (the shoulder). Both agree on Gaussian
    noise; on heavy-tailed noise the MAD alone would put ~5 % of points beyond "3σ"."""
    h = s.min_history
    core = MAD_SCALE * _from(residual, h, lambda r: trailing_rank(r, s.window, h))
    shoulder = _from(residual, h, lambda r: trailing_rank(r, s.window, h, SHOULDER)) / 1.645
    scale = np.fmax(core, shoulder)
    # A scale from k residuals runs low by chance; 1 + 4/k (from simulation) keeps the share
    # of iid Gaussian points beyond 3σ flat over history lengths (~0.15 %; the tail is 0.27 %).
    k = np.clip(np.arange(len(residual)) - h, 1, s.window)
    scale *= 1.0 + SMALL_SAMPLE / k
    # Mostly-equal residuals (quantised or flat series) give a zero scale: fall back to the
    # mean absolute residual, and for a perfectly flat past to a tiny scale (any change is
    # news, and the ratio stays finite). NaN (warm-up) stays NaN.
    zero = scale == 0
    if zero.any():
        fallback = MEAN_AD_SCALE * _trailing_mean_from(residual, h, s.window)
        tiny = 1e-9 * np.maximum(np.abs(median), 1.0)
        scale[zero] = np.where(fallback[zero] > 0, fallback[zero], tiny[zero])
    return scale


def trailing_rank(series: np.ndarray, window: int, min_history: int, percentile: float = 50.0
                  ) -> np.ndarray:
    """out[i] = percentile of series[i-window:i] (the median by default; rank as scipy's
    rank filters take it); fewer points early on, NaN below min_history. Odd windows give
    true medians."""
    n = len(series)
    out = np.full(n, np.nan)
    if n > window:
        # With origin window//2 the filter at j covers series[j-window+1 : j+1].
        full = ndimage.percentile_filter(series, percentile, size=window, origin=window // 2,
                                         mode="nearest")
        out[window:] = full[window - 1 : n - 1]
    for i in range(min_history, min(window, n - 1) + 1):
        if percentile == 50.0:
            out[i] = np.median(series[:i])  # an even count averages the middle two
        else:
            out[i] = np.sort(series[:i])[min(int(i * percentile / 100.0), i - 1)]
    return out


def _from(series: np.ndarray, start: int, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """fn over series[start:], realigned (series[:start] is undefined)."""
    out = np.full(len(series), np.nan)
    if len(series) > start:
        out[start:] = fn(series[start:])
    return out


def _trailing_mean_from(series: np.ndarray, start: int, window: int) -> np.ndarray:
    out = np.full(len(series), np.nan)
    tail = series[start:]
    if len(tail) < 2:
        return out
    sums = np.concatenate([[0.0], np.cumsum(tail)])
    idx = np.arange(1, len(tail))
    lo = np.maximum(idx - window, 0)
    out[start + 1 :] = (sums[idx] - sums[lo]) / (idx - lo)
    return out


def seasonal_periods(stamps: np.ndarray) -> list[float]:
    """Daily and weekly periods the sampling can resolve (≥ 4 samples a period) and the
    series reaches (a previous period exists for some point). Where no previous period
    exists the seasonal model has no value, so this choice leaks nothing from the future."""
    if len(stamps) < 3:
        return []
    step = float(np.median(np.diff(stamps)))
    span = float(stamps[-1] - stamps[0])
    return [p for p in (DAY, WEEK) if step * 4 <= p and span >= p]


def seasonal_baseline(stamps: np.ndarray, values: np.ndarray, period: float, lags: int
                      ) -> np.ndarray:
    """Median of the values one, two, … `lags` periods earlier (nearest sample within half a
    step; NaN where fewer than two exist)."""
    return _median_of_lags(stamps, values, period, lags)


def _median_of_lags(stamps: np.ndarray, series: np.ndarray, period: float, lags: int
                    ) -> np.ndarray:
    lagged = np.column_stack([_lagged(stamps, series, k * period) for k in range(1, lags + 1)])
    lagged.sort(axis=1)  # NaN sorts last
    count = np.isfinite(lagged).sum(axis=1)
    rows = np.arange(len(series))
    low = lagged[rows, np.maximum(count - 1, 0) // 2]
    high = lagged[rows, np.maximum(count, 1) // 2]
    return np.where(count >= 1, (low + high) / 2, np.nan)


def _lagged(stamps: np.ndarray, values: np.ndarray, lag: float) -> np.ndarray:
    """values[j] where stamps[j] is within half a step of stamps[i] - lag, else NaN."""
    n = len(stamps)
    step = float(np.median(np.diff(stamps)))
    out = np.full(n, np.nan)
    shift = int(round(lag / step))
    if shift < n and np.allclose(stamps[shift:] - stamps[:-shift], lag, rtol=0, atol=step / 2):
        out[shift:] = values[:-shift]  # regular sampling: a plain index shift
        return out
    target = stamps - lag
    idx = np.clip(np.searchsorted(stamps, target), 1, n - 1)
    nearest = np.where(target - stamps[idx - 1] < stamps[idx] - target, idx - 1, idx)
    hit = np.abs(stamps[nearest] - target) <= step / 2
    out[hit] = values[nearest[hit]]
    return out


def _seasonal_model(stamps: np.ndarray, values: np.ndarray, period: float,
                    plain_expected: np.ndarray, s: RobustSettings) -> _Model | None:
    baseline = seasonal_baseline(stamps, values, period, s.seasonal_lags)
    first = int(np.argmax(np.isfinite(baseline)))
    if not np.isfinite(baseline[first]):
        return None
    # A rare gap leaves a hole in the baseline: fall back to the plain median there.
    baseline = np.where(np.isfinite(baseline), baseline, plain_expected)
    residual = values[first:] - baseline[first:]
    if not np.isfinite(residual).all():
        residual = np.where(np.isfinite(residual), residual, 0.0)
    level, scale = _rolling(residual, s)
    expected = np.full(len(values), np.nan)
    spread = np.full(len(values), np.nan)
    expected[first:] = baseline[first:] + level
    spread[first:] = scale
    return _Model.of(values, expected, _with_phase_scale(stamps, values, expected, spread, period,
                                                      s))


def _with_phase_scale(stamps: np.ndarray, values: np.ndarray, expected: np.ndarray,
                      scale: np.ndarray, period: float, s: RobustSettings) -> np.ndarray:
    """Noise often depends on the time of day (busy hours are noisier): never let the scale
    fall below the typical error at this phase on previous periods (1.4826 × the median, over
    the lags, of the median error in a PHASE_NEIGHBOURS-point neighbourhood there)."""
    errors = np.abs(values - expected)
    finite = np.isfinite(errors)
    if not finite.any():
        return scale
    local = np.full(len(values), np.nan)
    local[finite] = ndimage.median_filter(errors[finite], size=PHASE_NEIGHBOURS, mode="nearest")
    phase = MAD_SCALE * _median_of_lags(stamps, local, period, s.seasonal_lags)
    floor: np.ndarray = np.fmax(scale, np.where(np.isfinite(scale), phase, np.nan))
    return floor


# isolation forest -------------------------------------------------------------------------


def isolation_forest(stamps: np.ndarray, values: np.ndarray,
                     settings: ForestSettings | None = None) -> Scores:
    f = settings or ForestSettings()
    base = robust(stamps, values)
    features, usable = _features(stamps, values, base)
    deviation = np.full(len(values), np.nan)
    rows = np.flatnonzero(usable)
    first = MIN_POINTS["isolation_forest"] - 1 - 2 * RobustSettings().min_history
    if len(rows) <= first:
        return Scores(deviation, base.expected)
    isolation = np.full(len(values), np.nan)
    starts = _refits(first, len(rows), f)
    for start, end in zip(starts, [*starts[1:], len(rows)], strict=True):
        past, ahead = rows[:start], rows[start:end]
        isolation[ahead] = _forest_block(features[past], features[ahead], f)
    # The forest ranks well but is blind to magnitude beyond its training range (a 15σ
    # spike isolates about as fast as the most extreme training point), so it does not
    # supply the size: the robust deviation does, scaled down where the forest does not
    # rank the point among its `contamination` most isolated.
    trust = np.minimum(isolation / float(norm.isf(f.contamination)), 1.0)
    return Scores(base.deviation * trust, base.expected)


def _refits(first: int, rows: int, f: ForestSettings) -> list[int]:
    """Row counts at which a new forest is fitted: `first`, then doubling from `min_block`
    up to `max_block`, then every `max_block` rows. Fixed by position alone, so a prefix of
    a series is scored exactly as it is inside the whole series."""
    starts, at = [first], f.min_block
    while at < rows:
        if at > starts[-1]:
            starts.append(at)
        at = at * 2 if at < f.max_block else at + f.max_block
    return starts


def _features(stamps: np.ndarray, values: np.ndarray, base: Scores
              ) -> tuple[np.ndarray, np.ndarray]:
    plain, plain_scale = _rolling(values, RobustSettings())
    diff = np.concatenate([[np.nan], np.diff(values)])
    with np.errstate(invalid="ignore", divide="ignore"):
        columns = [values, diff / plain_scale, (values - plain) / plain_scale,
                   base.deviation, np.log1p(plain_scale)]
    features = np.column_stack(columns)
    return features, np.isfinite(features).all(axis=1)


def _forest_block(train: np.ndarray, score: np.ndarray, f: ForestSettings) -> np.ndarray:
    """How isolated each `score` row is, in sigmas: fitted and calibrated on the recent
    training rows — their median score is 0σ and their `contamination` quantile sits where
    a Gaussian puts the same share (2.05σ for 2 %). (`contamination` is not passed to
    sklearn: its offset would score every training row once more.)"""
    recent = train[-REFERENCE_POINTS:]
    forest = IsolationForest(n_estimators=f.trees, max_samples=min(256, len(recent)),
                             random_state=f.seed)
    forest.fit(recent)
    reference = forest.score_samples(recent)
    centre = float(np.median(reference))
    edge = float(np.quantile(reference, f.contamination))
    spread = (centre - edge) / float(norm.isf(f.contamination)) or 1e-9
    # score_samples is lower for anomalies: sigmas below the centre are "how isolated".
    isolation: np.ndarray = np.maximum((centre - forest.score_samples(score)) / spread, 0.0)
    return isolation
