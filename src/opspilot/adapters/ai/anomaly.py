"""Anomaly detection over numpy arrays: timestamps in epoch seconds, values, both float64.

One detector, `detect`: causal (point i is judged from points ≤ i only, so the API and the
alert engine see what a live stream would), returning per point a calibrated `score` in
[0, 1], a signed `deviation` and the value it `expected`. Design and measurements:
docs/adr/0012-calibrated-anomaly-likelihood.md, docs/benchmarks-ai.md.

1. Prediction (`robust`, ADR 0005): the median of the previous 61 points, or, where it
   predicted better over the last period, a daily/weekly seasonal median of the same phase.
2. Error scale with a floor that cannot collapse (`calibrate`): |value − expected| over a
   long-run mean of past errors (an exponential average, ~`error_span` points), never
   below the series' resolution (the smallest change seen so far) nor 1e-9 × the level.
   The ratio is the reported `deviation`; the surprise is log(1 + ratio / sharpness):
   proportional to small errors, logarithmic for huge ones, so a 1000× burst is still
   news but does not swamp the history it is compared with.
3. Anomaly likelihood (after Numenta's post-processing): the mean surprise of the last
   `short` points, and the last point's own surprise (a lone spike), each against the mean
   and deviation of the same measure over the previous `history` points (deviation
   floored); the normal tail probability p, scored −log10(p) / 10 clipped to [0, 1], the
   larger of the two: 0.75 means p ≈ 3e-8 whatever the series, so one threshold means the
   same on every series.
4. Two corrections the Gaussian tail cannot make: recent errors no larger than ones this
   series made at least `recurrence` times over the last `recurrence_window` points are
   routine (score 0: a nightly burst stops alarming after a few nights); a value beyond
   every value seen before, by a clear margin, is news (score 1: NAB's numenta detector
   has the same "spatial" rule).
5. Reported once: a point keeps its likelihood only when it is the highest of the last
   `quiet` points; the rest of an episode scores 0. An alarm marks where something starts;
   `likelihood` keeps the value before this step (how anomalous the point is now: the
   alert engine keeps an incident open while it stays above the threshold).

The first `warm_up` points score 0 (too little history to calibrate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import ndimage
from scipy.signal import lfilter
from scipy.special import ndtr

from opspilot.domain.errors import LimitExceeded, ValidationError

MAX_POINTS = 1_000_000
MAX_RATIO = 1e9  # error ratios above this are all 'never seen' (keeps sums finite)
SEASONAL_MARGIN = 0.8  # a seasonal model must beat the current error by this factor
METHODS = ("robust",)
MIN_POINTS = 11  # the robust expectation's warm-up is 10 points
DAY = 86_400.0
WEEK = 7 * DAY


class Scores(NamedTuple):
    score: np.ndarray  # calibrated, in [0, 1]; 0 while warming up
    deviation: np.ndarray  # signed, in long-run error scales; NaN where not judged
    expected: np.ndarray
    likelihood: np.ndarray  # before "reported once": how anomalous each point is now


@dataclass(frozen=True, slots=True)
class RobustSettings:
    """The prediction (see docs/adr/0005-analysis-algorithms.md).

    window: points in the trailing median and in the residual scale (odd: a true median).
    min_history: points needed before a median exists.
    seasonal_lags: previous periods whose same-phase values make the seasonal expectation
      (the median of those that exist).
    """

    window: int = 61
    min_history: int = 5
    seasonal_lags: int = 4


@dataclass(frozen=True, slots=True)
class CalibrationSettings:
    """One setting for every series, chosen on the full NAB corpus (docs/benchmarks-ai.md)."""

    error_span: int = 600  # points in the exponential average of past errors
    sharpness: float = 8.0  # error ratio below which the surprise grows ~linearly, then log
    short: int = 15  # points averaged into the current surprise (a lone point is judged too)
    history: int = 8640  # points of past surprises it is compared with
    spread_floor: float = 0.01  # least deviation of the past short means
    quiet: int = 20  # an alarm needs a higher likelihood than the last `quiet` points
    quiet_step: float = 0.05  # ... by this much (a tail probability ~3× smaller)
    # Points scored 0 at the start: the first predictions' errors, and `short` more before
    # the past short means are real ones (earlier they are the lag's zero fill).
    warm_up: int = 40
    # Seen before: recent errors no larger than the `recurrence`-th largest of the last
    # `recurrence_window` points (× margin) are routine for this series, not news.
    recurrence: int = 40  # for the mean of the last `short` points
    lone_recurrence: int = 3  # for one point (a burst's first point is its largest error)
    recurrence_window: int = 8640
    recurrence_margin: float = 1.1
    # Out of range: a value beyond every value seen before (after `range_warm_up` points),
    # by more than `range_tolerance` of that range and `range_margin` error scales.
    range_tolerance: float = 0.05
    range_margin: float = 2.0
    range_warm_up: int = 500


DEFAULT_CALIBRATION = CalibrationSettings()


# validation -------------------------------------------------------------------------------


def validate(stamps: np.ndarray, values: np.ndarray, method: str, threshold: float) -> None:
    """Raise ValidationError (naming the field) for input `method` cannot judge."""
    if method not in METHODS:
        raise ValidationError("method", f"one of {', '.join(METHODS)}")
    if not math.isfinite(threshold) or not 0 < threshold <= 1:
        raise ValidationError("threshold", "a score, greater than 0 and at most 1")
    n = len(values)
    if n == 0:
        raise ValidationError("data_points", "the series is empty")
    if n > MAX_POINTS:
        raise LimitExceeded("data_points", f"at most {MAX_POINTS} points", limit=MAX_POINTS)
    if not (np.isfinite(values).all() and np.isfinite(stamps).all()):
        raise ValidationError("data_points", "timestamps and values must be finite numbers")
    if n > 1 and not (np.diff(stamps) >= 0).all():
        raise ValidationError("data_points", "timestamps must be in order (equal ones are "
                                             "averaged)")
    if len(np.unique(stamps)) < MIN_POINTS:
        raise ValidationError("data_points", f"at least {MIN_POINTS} distinct timestamps")


def merge_duplicates(stamps: np.ndarray, values: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct timestamps, the mean value at each, the merged index of every input point).
    Real exports repeat a timestamp (two scrapes in one second, a retried write): the
    points at one instant are one observation, their mean."""
    unique, inverse, counts = np.unique(stamps, return_inverse=True, return_counts=True)
    if len(unique) == len(stamps):
        return stamps, values, np.arange(len(stamps))
    means = np.bincount(inverse, weights=values) / counts
    return unique, means, inverse


def detect(method: str, stamps: np.ndarray, values: np.ndarray,
           settings: CalibrationSettings = DEFAULT_CALIBRATION) -> Scores:
    """Scores of a sorted series with distinct timestamps (see `merge_duplicates`)."""
    if method not in METHODS:
        raise ValidationError("method", f"one of {', '.join(METHODS)}")
    return calibrate(values, robust(stamps, values), settings)


def flagged(scores: Scores, threshold: float) -> np.ndarray:
    """Indices whose score reaches `threshold`."""
    return np.flatnonzero(scores.score >= threshold)


def ongoing_since(scores: Scores, threshold: float) -> int | None:
    """The index of the alarm that opened the anomaly the last point is still in, or None.
    An episode starts at a flagged point and lasts while the likelihood (before "reported
    once") stays at or above `threshold` without a break: a level shift stays anomalous
    until the prediction has caught up with it, a lone spike for the few points whose
    recent mean it lifts. The alert engine keeps an incident open exactly that long."""
    above = scores.likelihood >= threshold
    if not len(above) or not above[-1]:
        return None
    below = np.flatnonzero(~above)
    start = int(below[-1]) + 1 if len(below) else 0
    alarms = np.flatnonzero(scores.score[start:] >= threshold)
    return start + int(alarms[0]) if len(alarms) else None


# calibration ------------------------------------------------------------------------------


def calibrate(values: np.ndarray, expected: np.ndarray,
              settings: CalibrationSettings = DEFAULT_CALIBRATION) -> Scores:
    """Score a prediction's errors (steps 2–5 of the module docstring)."""
    s = settings
    guess = np.where(np.isfinite(expected), expected, values)
    error = np.abs(values - guess)
    scale = np.fmax(_lag(_running_mean(error, s.error_span), np.inf),
                    np.maximum(resolution(values), 1e-9 * np.abs(guess)))
    with np.errstate(invalid="ignore", divide="ignore"):
        # Capped: a change after a perfectly flat start has no scale yet (0), and an
        # infinite surprise would poison every running sum after it.
        ratio = np.where(error > 0, np.minimum(error / scale, MAX_RATIO), 0.0)
    surprise = np.log1p(ratio / s.sharpness)
    recent = _window_mean(surprise, s.short)
    past = _lag(recent, 0.0, s.short)
    raw = np.maximum(_news(recent, past, s.recurrence, s),
                     _news(surprise, _lag(surprise, 0.0), s.lone_recurrence, s))
    raw[_out_of_range(values, scale, s)] = 1.0
    raw[: s.warm_up] = 0.0
    score = _reported_once(raw, s.quiet, s.quiet_step)
    deviation = np.where(np.isfinite(expected), np.sign(values - guess) * ratio, np.nan)
    return Scores(score, deviation, expected, raw)


def likelihood(recent: np.ndarray, past: np.ndarray, s: CalibrationSettings) -> np.ndarray:
    """−log10 of the normal tail probability of each `recent` surprise against the mean and
    deviation of `past` (the same measure, lagged) over the last `history` points; / 10,
    clipped to [0, 1]."""
    mean = _window_mean(past, s.history)
    spread = np.sqrt(np.maximum(_window_mean(past * past, s.history) - mean * mean, 0.0))
    z = (recent - mean) / np.maximum(spread, s.spread_floor)
    # ndtr, not log_ndtr (1.5× faster): p below ~1e-300 underflows to 0, −log10 → inf, and
    # the clip makes it 1 as it would anyway (any p below 1e-10 scores 1).
    with np.errstate(divide="ignore"):
        tail_log10: np.ndarray = np.log10(ndtr(-z))
    return np.clip(-tail_log10 / 10.0, 0.0, 1.0)


def _news(recent: np.ndarray, past: np.ndarray, times: int, s: CalibrationSettings
          ) -> np.ndarray:
    """The likelihood of `recent` against `past`, 0 where the series has done as much
    `times` times over the last `recurrence_window` points: within `recurrence_margin` of
    the `times`-th largest past value. A nightly batch or a routine burst is not news,
    however far the Gaussian tail says it is."""
    news = likelihood(recent, past, s)
    size = min(s.recurrence_window, len(past))
    if size < times:  # too short a series to have done anything `times` times
        return news
    kth = ndimage.rank_filter(past, -times, size=size, origin=(size - 1) // 2,
                              mode="constant", cval=0.0)
    routine: np.ndarray = np.where(recent <= kth * s.recurrence_margin, 0.0, news)
    return routine


def _out_of_range(values: np.ndarray, scale: np.ndarray, s: CalibrationSettings) -> np.ndarray:
    """Values beyond everything seen before, by more than `range_tolerance` of the range so
    far and `range_margin` error scales (a noise record beats the last one by little; a lone
    spike or a break-out by much), once `range_warm_up` points exist. Scored 1: the series
    has never been there."""
    high = _lag(np.maximum.accumulate(values), np.inf)
    low = _lag(np.minimum.accumulate(values), -np.inf)
    with np.errstate(invalid="ignore"):
        room = s.range_tolerance * (high - low)
        margin = s.range_margin * scale
        beyond: np.ndarray = ((values - high > np.maximum(room, margin))
                              | (low - values > np.maximum(room, margin)))
    beyond[: s.range_warm_up] = False
    return beyond


def _reported_once(score: np.ndarray, quiet: int, step: float) -> np.ndarray:
    """Keep a score only where it beats every score of the previous `quiet` points by
    `step` (a likelihood still climbing through an episode is the same news)."""
    recent_max = ndimage.maximum_filter1d(score, size=quiet, origin=(quiet - 1) // 2,
                                          mode="constant", cval=0.0)
    return np.where(score > _lag(recent_max, 0.0) + step, score, 0.0)


def resolution(values: np.ndarray) -> np.ndarray:
    """The smallest non-zero change seen before each point (0 before any change): a
    quantised series (counts, whole percent) cannot be more precise than that."""
    steps = np.abs(np.diff(values, prepend=values[0]))
    smallest = np.minimum.accumulate(np.where(steps > 0, steps, np.inf))
    return _lag(np.where(np.isfinite(smallest), smallest, 0.0), 0.0)


def _running_mean(series: np.ndarray, span: int) -> np.ndarray:
    """Exponential moving average, bias-corrected at the start (no made-up first value)."""
    alpha = 2.0 / (span + 1.0)
    averaged: np.ndarray = lfilter([alpha], [1.0, alpha - 1.0], series)
    start = min(len(series), 50 * span)  # beyond this the correction is below 1e-40
    averaged[:start] /= 1.0 - (1.0 - alpha) ** np.arange(1, start + 1)
    return averaged


def _window_mean(series: np.ndarray, window: int) -> np.ndarray:
    """Mean of series[max(0, i − window + 1) : i + 1]."""
    sums = np.cumsum(series)
    means = np.empty(len(series))
    head = min(window, len(series))  # fewer than `window` points so far: all of them
    means[:head] = sums[:head] / np.arange(1, head + 1)
    # Whole windows, computed in place (the largest cost of the calibration at 1 M points).
    if window < len(series):
        np.subtract(sums[window:], sums[:-window], out=means[window:])
        means[window:] /= window
    return means


def _lag(series: np.ndarray, fill: float, by: int = 1) -> np.ndarray:
    """series shifted `by` points later (each point sees only earlier ones)."""
    out = np.full(len(series), fill)
    if by < len(series):
        out[by:] = series[: len(series) - by]
    return out


# prediction: rolling median, or the seasonal median where it predicts better -----------


def robust(stamps: np.ndarray, values: np.ndarray, settings: RobustSettings | None = None
           ) -> np.ndarray:
    """The expected value of each point from the points before it (NaN while warming up)."""
    s = settings or RobustSettings()
    plain = trailing_rank(values, s.window, s.min_history)
    best = _Model(plain, np.abs(values - plain))
    step = float(np.median(np.diff(stamps))) if len(stamps) > 1 else 1.0
    for period in seasonal_periods(stamps):
        seasonal = _seasonal_model(stamps, values, period, plain, s)
        if seasonal is not None:
            best = best.or_better(seasonal, horizon=int(round(period / step)))
    return best.expected


class _Model:
    """Expected values and one-step errors of a model (or of a per-point choice between
    models)."""

    def __init__(self, expected: np.ndarray, error: np.ndarray) -> None:
        self.expected = expected
        self.error = error  # |value - expected|: what the model got wrong at each point

    def or_better(self, other: _Model, horizon: int) -> _Model:
        """Per point, `other` where its mean error over the previous `horizon` points (one
        period) was clearly smaller. A whole period is the judge because a plain median
        looks perfect on a quiet stretch and fails at every scheduled change; and only past
        errors count, so the choice is causal."""
        mine = _trailing_mean_of(self.error, horizon)
        theirs = _trailing_mean_of(other.error, horizon)
        take = np.isfinite(theirs) & np.isfinite(other.expected)
        take &= ~(mine * SEASONAL_MARGIN <= theirs)
        return _Model(np.where(take, other.expected, self.expected),
                      np.where(take, other.error, self.error))


def _trailing_mean_of(errors: np.ndarray, horizon: int) -> np.ndarray:
    """Mean of the finite errors among the previous `horizon` points; NaN with fewer than a
    quarter of a horizon of them."""
    finite = np.isfinite(errors)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, errors, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    # Point i covers [max(0, i − horizon), i): shifted differences, no index arrays.
    total = sums[:-1].copy()
    n = counts[:-1].copy()
    if horizon < len(errors):
        total[horizon:] -= sums[: len(errors) - horizon]
        n[horizon:] -= counts[: len(errors) - horizon]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n >= max(horizon // 4, 1), total / n, np.nan)


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
    columns = [_lagged(stamps, series, k * period) for k in range(1, lags + 1)]
    if lags == 4:
        return _median_of_four(*columns)
    return _median_of_columns(np.column_stack(columns))


def _median_of_four(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray
                    ) -> np.ndarray:
    """Row-wise median of four columns; elementwise min/max where all four exist (most
    rows: 5× faster than sorting), the general path for the rows with gaps."""
    low = np.maximum(np.minimum(a, b), np.minimum(c, d))  # NaN anywhere → the gap path
    high = np.minimum(np.maximum(a, b), np.maximum(c, d))
    out: np.ndarray = (low + high) / 2
    gaps = np.flatnonzero(~np.isfinite(out))
    if len(gaps):
        out[gaps] = _median_of_columns(np.column_stack([a[gaps], b[gaps], c[gaps], d[gaps]]))
    return out


def _median_of_columns(lagged: np.ndarray) -> np.ndarray:
    """Row-wise median of the finite entries (NaN where there are none)."""
    lagged.sort(axis=1)  # NaN sorts last
    count = np.isfinite(lagged).sum(axis=1)
    rows = np.arange(len(lagged))
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
    """Same phase on previous periods, plus the recent median of this model's residuals
    (a level shift moves the whole day)."""
    baseline = seasonal_baseline(stamps, values, period, s.seasonal_lags)
    first = int(np.argmax(np.isfinite(baseline)))
    if not np.isfinite(baseline[first]):
        return None
    # A rare gap leaves a hole in the baseline: fall back to the plain median there.
    baseline = np.where(np.isfinite(baseline), baseline, plain_expected)
    residual = values[first:] - baseline[first:]
    if not np.isfinite(residual).all():
        residual = np.where(np.isfinite(residual), residual, 0.0)
    expected = np.full(len(values), np.nan)
    expected[first:] = baseline[first:] + trailing_rank(residual, s.window, s.min_history)
    return _Model(expected, np.abs(values - expected))
