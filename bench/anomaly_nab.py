"""The anomaly detector on the NAB series, scored the way NAB scores, plus speed.

    .venv/bin/python bench/anomaly_nab.py                      # ~1 min with the speed runs
    .venv/bin/python bench/anomaly_nab.py --published ../NAB/results --no-speed
    .venv/bin/python bench/anomaly_nab.py --sensitivity --no-speed  # ~2 min

Data: `../shared/data/nab` beside the repository (NAB series and
`labels/combined_windows.json`; a sample of NAB's 58 series, so every figure here is an
estimate of the full-corpus one). Scorer: `nab_score.py` (NAB's windows, scaled sigmoid,
profiles, null/perfect normalisation, probation, one threshold swept over the corpus).

Rows:
- `robust (calibrated score)`: what the API ships (`anomaly.detect`), swept and at the
  shipped default threshold;
- two uncalibrated baselines on the same data, for what the calibration buys: the same
  prediction's raw |error| / long-run scale, and the expanding z-score (each point against
  the mean and deviation of all points before it);
- with `--published DIR` (the `results` folder of a NAB checkout), the anomaly scores that
  NAB publishes for other detectors on the same series, through the same scorer, swept on
  this sample and at the threshold NAB published for them (tuned on all 58 series).

Beside the NAB score, at the threshold in use: false-alarm events per 1,000 scored points
(runs of consecutive detections outside every window, after the probationary period), and
as a secondary line the labelled windows with at least one detection.
Causality: `anomaly.detect` judges point i from points ≤ i only (unit tests check that
changing the future leaves past scores untouched); the baselines are causal too.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from nab_score import PROFILES, Labelled, Swept, at_threshold, label, raw_score, sweep

from opspilot.adapters.ai import anomaly
from opspilot.domain.analysis import DEFAULT_ANOMALY_THRESHOLD

NAB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nab"
PUBLISHED = ("numenta", "ARTime", "knncad", "windowedGaussian")

Detector = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Series:
    name: str
    stamps: np.ndarray
    values: np.ndarray
    labels: Labelled


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def load_corpus() -> list[Series]:
    windows = json.loads((NAB / "labels" / "combined_windows.json").read_text())
    corpus = []
    for name, spans in windows.items():
        with (NAB / "data" / name).open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        stamps = np.array([_epoch(r["timestamp"]) for r in rows])
        values = np.array([float(r["value"]) for r in rows])
        corpus.append(Series(name, stamps, values,
                             label(stamps, [(_epoch(a), _epoch(b)) for a, b in spans])))
    return corpus


# detectors --------------------------------------------------------------------------------


def calibrated(stamps: np.ndarray, values: np.ndarray) -> np.ndarray:
    return anomaly.detect("robust", stamps, values).score


def raw_ratio(stamps: np.ndarray, values: np.ndarray) -> np.ndarray:
    deviation = np.abs(anomaly.detect("robust", stamps, values).deviation)
    return np.nan_to_num(deviation, nan=0.0)


def expanding_zscore(stamps: np.ndarray, values: np.ndarray) -> np.ndarray:
    shifted = values - values[0]  # keeps the running sums small: less cancellation
    count = np.arange(len(values), dtype=float)
    sums = np.concatenate([[0.0], np.cumsum(shifted)[:-1]])
    squares = np.concatenate([[0.0], np.cumsum(shifted * shifted)[:-1]])
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / count
        std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
        z = np.where(std > 0, np.abs(shifted - mean) / std, 0.0)
    z[:10] = 0.0
    return np.nan_to_num(z)


def published_threshold(results: Path, detector: str) -> float:
    """The corpus-wide standard-profile threshold NAB published for `detector`."""
    path = results / detector / f"{detector}_standard_scores.csv"
    with path.open(newline="") as handle:
        return float(next(csv.DictReader(handle))["Threshold"])


def published(results: Path, detector: str) -> Callable[[Series], np.ndarray]:
    def scores(series: Series) -> np.ndarray:
        folder, file = series.name.split("/")
        with (results / detector / folder / f"{detector}_{file}").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        got = np.array([float(r["anomaly_score"]) for r in rows])
        assert len(got) == len(series.values), series.name
        return got

    return scores


# scoring ----------------------------------------------------------------------------------


@dataclass
class Measured:
    label: str
    swept: list[Swept]
    fixed: list[Swept] | None  # at the shipped (ours) or the published (NAB's) threshold
    threshold: float  # where false alarms and windows are counted
    false_events: int
    scored_points: int
    caught: int
    windows: int


def measure(label_: str, corpus: list[Series], scores: list[np.ndarray],
            default: float | None) -> Measured:
    pairs = [(s, c.labels) for s, c in zip(scores, corpus, strict=True)]
    swept = [sweep(pairs, p) for p in PROFILES]
    fixed = [at_threshold(pairs, p, default) for p in PROFILES] if default else None
    threshold = default if default is not None else swept[0].threshold
    events = points = caught = windows = 0
    for score, lab in pairs:
        skip = lab.probation
        hit = np.nan_to_num(score[skip:], nan=0.0) >= threshold
        outside = hit & (lab.window[skip:] < 0)
        events += int(np.sum(np.diff(outside.astype(int), prepend=0) == 1))
        points += len(outside)
        _, tp, _, total = raw_score([(score, lab)], PROFILES[0], threshold)
        caught += tp
        windows += total
    return Measured(label_, swept, fixed, threshold, events, points, caught, windows)


def print_table(rows: list[Measured]) -> None:
    print("| detector | standard | low FP | low FN | threshold (standard sweep) | "
          "at the shipped / published threshold: standard · low FP · low FN | false-alarm events "
          "/ 1,000 points | windows caught |")
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for m in rows:
        fixed = (" · ".join(f"{s.score:.1f}" for s in m.fixed) + f" (at {m.threshold:g})"
                 if m.fixed else "—")
        per_k = 1000 * m.false_events / m.scored_points
        print(f"| {m.label} | {m.swept[0].score:.1f} | {m.swept[1].score:.1f} | "
              f"{m.swept[2].score:.1f} | {m.swept[0].threshold:.4g} | {fixed} | "
              f"{per_k:.2f} | {m.caught}/{m.windows} |")


def print_per_series(corpus: list[Series], scores: list[np.ndarray], threshold: float) -> None:
    print(f"\n#### Per series, shipped detector at {threshold:g} (standard profile)\n")
    print("| series | points | windows caught | false detections | raw NAB score |")
    print("|---|---:|---:|---:|---:|")
    for series, score in zip(corpus, scores, strict=True):
        raw, tp, fp, total = raw_score([(score, series.labels)], PROFILES[0], threshold)
        print(f"| {series.name.split('/')[-1]} | {len(series.values)} | {tp}/{total} | {fp} | "
              f"{raw:+.2f} |")


def run_nab(published_dir: Path | None) -> None:
    corpus = load_corpus()
    points = sum(len(c.values) for c in corpus)
    print(f"### NAB sample: {len(corpus)} series, {points:,} points, "
          f"{sum(c.labels.windows for c in corpus)} scored windows\n")
    ours = [calibrated(c.stamps, c.values) for c in corpus]
    rows = [measure("robust (calibrated score, shipped)", corpus, ours,
                    DEFAULT_ANOMALY_THRESHOLD)]
    for name, detector in (("baseline: same prediction, raw error ratio", raw_ratio),
                           ("baseline: expanding z-score", expanding_zscore)):
        rows.append(measure(name, corpus, [detector(c.stamps, c.values) for c in corpus],
                            None))
    if published_dir is not None:
        for detector_name in PUBLISHED:
            load = published(published_dir, detector_name)
            rows.append(measure(f"published: {detector_name}", corpus,
                                [load(c) for c in corpus],
                                published_threshold(published_dir, detector_name)))
    print_table(rows)
    print_per_series(corpus, ours, DEFAULT_ANOMALY_THRESHOLD)


# sensitivity and hold-out -----------------------------------------------------------------

VARIANTS = {
    "sharpness": (4.0, 16.0),
    "short": (1, 5),
    "error_span": (150, 600),
    "history": (1000, 10_000),
    "spread_floor": (0.003, 0.03),
    "quiet": (1, 100, 1000),
}


def run_sensitivity() -> None:
    """Each setting changed alone from the shipped one; then a hold-out: pick the best of
    a small grid on half the series, score the other half with it and with the shipped
    setting."""
    corpus = load_corpus()
    expected = [anomaly.robust(c.stamps, c.values) for c in corpus]

    def scores(settings: anomaly.CalibrationSettings, part: list[int]) -> list[Swept]:
        pairs = [(anomaly.calibrate(corpus[i].values, expected[i], settings).score,
                  corpus[i].labels) for i in part]
        return [sweep(pairs, p) for p in PROFILES]

    everything = list(range(len(corpus)))
    shipped = anomaly.CalibrationSettings()
    print("\n### One setting changed at a time (swept; standard · low FP · low FN)\n")
    print("| setting | value | standard | low FP | low FN |")
    print("|---|---:|---:|---:|---:|")
    print("| shipped | — | " + " | ".join(f"{s.score:.1f}" for s in scores(shipped,
                                                                           everything)) + " |")
    for name, values in VARIANTS.items():
        for value in values:
            varied = dataclasses.replace(shipped, **{name: value})
            got = scores(varied, everything)
            print(f"| {name} | {value:g} | " + " | ".join(f"{s.score:.1f}" for s in got) + " |")
    grid = [dataclasses.replace(shipped, sharpness=c, short=k, error_span=e)
            for c in (4.0, 8.0, 16.0) for k in (1, 3, 5) for e in (150, 300, 600)]
    halves = (everything[0::2], everything[1::2])
    print("\n### Hold-out: tuned on one half (27 settings), scored on the other (standard)\n")
    print("| tuned on | picked (sharpness, short, error_span) | its score there | "
          "held-out score | shipped on the held-out half |")
    print("|---|---|---:|---:|---:|")
    for tune, test in (halves, halves[::-1]):
        best = max(grid, key=lambda g: scores(g, tune)[0].score)
        names = ", ".join(corpus[i].name.split("/")[-1].removesuffix(".csv") for i in tune)
        print(f"| {names} | {best.sharpness:g}, {best.short}, {best.error_span} | "
              f"{scores(best, tune)[0].score:.1f} | {scores(best, test)[0].score:.1f} | "
              f"{scores(shipped, test)[0].score:.1f} |")


# speed ------------------------------------------------------------------------------------


def run_speed(runs: int) -> None:
    n = 1_000_000
    values = np.random.default_rng(7).normal(100.0, 5.0, n)
    cases = {
        "1-minute steps (daily and weekly models)": np.arange(n) * 60.0,
        "1-hour steps (daily and weekly models)": np.arange(n) * 3600.0,
        "monthly steps (no seasonal model)": np.arange(n) * 86_400.0 * 30,
    }
    print(f"\n### Speed of the shipped detector on {n:,} points (median of {runs} runs)\n")
    print("| series | seconds | points/s |")
    print("|---|---:|---:|")
    for label_, stamps in cases.items():
        seconds = _median_time(functools.partial(anomaly.detect, "robust", stamps, values),
                               runs)
        print(f"| {label_} | {seconds:.3f} | {n / seconds:,.0f} |")


def _median_time(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--published", type=Path, default=None,
                        help="a NAB checkout's results/ folder, to score published detectors")
    parser.add_argument("--speed-runs", type=int, default=5)
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--sensitivity", action="store_true",
                        help="settings changed one at a time, and a hold-out check")
    args = parser.parse_args(argv)
    if not NAB.is_dir():
        print(f"NAB data not found at {NAB}", file=sys.stderr)
        return 1
    run_nab(args.published)
    if args.sensitivity:
        run_sensitivity()
    if not args.no_speed:
        run_speed(args.speed_runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
