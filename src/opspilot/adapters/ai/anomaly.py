"""Anomaly detectors over numpy arrays (timestamps in epoch seconds, values float64).

- `zscore`: the plain global z-score (mean and standard deviation of the whole series).
- `robust`: causal rolling median and MAD (×1.4826) over the previous `window` points, so a
  trend or a level shift moves the baseline instead of flagging everything after it; when
  the series covers at least three days, the expected value also takes the median of the same
  time of day on the previous days (seasonality), and the smaller residual wins.
- `isolation_forest`: scikit-learn's IsolationForest on windowed features (value, first
  difference, robust residual), its anomaly scores standardised robustly into sigmas.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from sklearn.ensemble import IsolationForest

MAD_SCALE = 1.4826
MIN_POINTS = {"z-score": 10, "robust": 10, "isolation_forest": 30}
ROBUST_WINDOW = 60
DAY = 86_400.0


def zscore(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(deviation in sigmas, expected value) per point."""
    mean = float(values.mean())
    std = float(values.std())
    expected = np.full_like(values, mean)
    if std == 0.0:
        return np.zeros_like(values), expected
    return (values - mean) / std, expected


def _trailing_stats(values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Median and scaled MAD of the `window` points before each point (NaN where none)."""
    n = len(values)
    median = np.full(n, np.nan)
    spread = np.full(n, np.nan)
    if n <= 1:
        return median, spread
    padded = np.concatenate([np.full(window - 1, np.nan), values[:-1]])
    windows = sliding_window_view(padded, window)  # row i: the points before i
    median[1:] = np.nanmedian(windows, axis=1)[: n - 1] if n > 1 else median[1:]
    deviations = np.abs(windows[: n - 1] - median[1:, None])
    spread[1:] = MAD_SCALE * np.nanmedian(deviations, axis=1)
    return median, spread


def _seasonal_expected(stamps: np.ndarray, values: np.ndarray) -> np.ndarray | None:
    """Median of the same time of day on previous days, when three days are covered."""
    if stamps[-1] - stamps[0] < 3 * DAY:
        return None
    step = float(np.median(np.diff(stamps)))
    if step <= 0 or DAY % step > 1e-6 * DAY:
        return None
    lag = int(round(DAY / step))
    expected = np.full(len(values), np.nan)
    shifted = [np.concatenate([np.full(k * lag, np.nan), values[: len(values) - k * lag]])
               for k in (1, 2, 3) if k * lag < len(values)]
    if not shifted:
        return None
    stacked = np.vstack(shifted)
    enough = np.sum(~np.isnan(stacked), axis=0) >= 2
    expected[enough] = np.nanmedian(stacked[:, enough], axis=0)
    return expected


def robust(stamps: np.ndarray, values: np.ndarray, window: int = ROBUST_WINDOW
           ) -> tuple[np.ndarray, np.ndarray]:
    median, spread = _trailing_stats(values, min(window, max(2, len(values) - 1)))
    floor = max(1e-9, 0.01 * float(np.nanmedian(np.abs(values))) if len(values) else 1e-9)
    spread = np.where(np.isnan(spread) | (spread < floor), floor, spread)
    deviation = np.where(np.isnan(median), 0.0, (values - median) / spread)
    expected = np.where(np.isnan(median), values, median)
    seasonal = _seasonal_expected(stamps, values)
    if seasonal is not None:
        residual = values - seasonal
        seasonal_spread = MAD_SCALE * np.nanmedian(np.abs(residual - np.nanmedian(residual)))
        seasonal_spread = max(float(seasonal_spread), floor)
        seasonal_dev = np.where(np.isnan(seasonal), deviation, residual / seasonal_spread)
        use_seasonal = np.abs(seasonal_dev) < np.abs(deviation)
        deviation = np.where(use_seasonal, seasonal_dev, deviation)
        expected = np.where(use_seasonal & ~np.isnan(seasonal), seasonal, expected)
    deviation[0] = 0.0
    return deviation, expected


def isolation_forest(stamps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    residual, expected = robust(stamps, values)
    diff = np.concatenate([[0.0], np.diff(values)])
    features = np.column_stack([values, diff, residual])
    model = IsolationForest(n_estimators=100, contamination="auto", random_state=0)
    model.fit(features)
    score = -model.score_samples(features)  # higher = more isolated
    centre = float(np.median(score))
    spread = max(MAD_SCALE * float(np.median(np.abs(score - centre))), 1e-9)
    deviation = (score - centre) / spread * np.sign(np.where(residual == 0, 1.0, residual))
    return deviation, expected


def detect(method: str, stamps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if method == "z-score":
        return zscore(values)
    if method == "robust":
        return robust(stamps, values)
    return isolation_forest(stamps, values)
