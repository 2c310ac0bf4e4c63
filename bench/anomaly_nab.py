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
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from nab_score import PROFILES, Labelled, Swept, at_threshold, label, raw_score, sweep

from opspilot.adapters.ai import anomaly
from opspilot.domain.analysis import DEFAULT_ANOMALY_THRESHOLD

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nab"
NAB_ENV = "OPSPILOT_NAB"  # a NAB checkout, or the git directory of one: the full corpus
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


def load_corpus(root: Path) -> list[Series]:
    windows = json.loads((root / "labels" / "combined_windows.json").read_text())
    corpus = []
    for name, spans in sorted(windows.items()):
        with (root / "data" / name).open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        stamps = np.array([_epoch(r["timestamp"]) for r in rows])
        values = np.array([float(r["value"]) for r in rows])
        corpus.append(Series(name, stamps, values,
                             label(stamps, [(_epoch(a), _epoch(b)) for a, b in spans])))
    return corpus


def nab_checkout(given: str, scratch: Path) -> Path:
    """A directory holding NAB's data/, labels/, results/ and config/: `given` itself, or,
    when `given` is the git directory of a NAB clone (e.g. a bare mirror), those folders
    of its HEAD extracted into `scratch` with `git archive` (nothing of NAB's is copied into
    this repository)."""
    path = Path(given).expanduser()
    if (path / "labels" / "combined_windows.json").is_file():
        return path
    if not (path / "HEAD").is_file():
        raise SystemExit(f"{path}: neither a NAB checkout nor the git directory of one")
    archive = subprocess.run(
        ["git", "--git-dir", str(path), "archive", "HEAD", "data", "labels", "config",
         *(f"results/{d}" for d in PUBLISHED), "results/final_results.json"],
        check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(scratch)], input=archive, check=True)
    return scratch


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


def published_thresholds(results: Path, detector: str) -> list[float]:
    """The corpus-wide threshold NAB published for `detector`, per profile (PROFILES order;
    each profile's threshold was optimised on all 58 series)."""
    found = []
    for profile in PROFILES:
        path = results / detector / f"{detector}_{profile.name}_scores.csv"
        with path.open(newline="") as handle:
            found.append(float(next(csv.DictReader(handle))["Threshold"]))
    return found


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
            fixed_at: list[float] | None) -> Measured:
    """Swept per profile; and at `fixed_at` (one threshold per profile) when given. False
    alarms and windows caught are counted at the standard profile's fixed threshold, or
    the swept one without."""
    pairs = [(s, c.labels) for s, c in zip(scores, corpus, strict=True)]
    swept = [sweep(pairs, p) for p in PROFILES]
    fixed = ([at_threshold(pairs, p, t) for p, t in zip(PROFILES, fixed_at, strict=True)]
             if fixed_at else None)
    threshold = fixed_at[0] if fixed_at else swept[0].threshold
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
        fixed = "—"
        if m.fixed:
            at = sorted({s.threshold for s in m.fixed})
            fixed = (" · ".join(f"{s.score:.1f}" for s in m.fixed)
                     + f" (at {' / '.join(f'{t:.4g}' for t in at)})")
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


def run_nab(corpus: list[Series], published_dir: Path | None, full: bool) -> bool:
    """Print the table; False when the scorer failed to reproduce NAB's published figures."""
    points = sum(len(c.values) for c in corpus)
    kind = "the full NAB corpus" if full else "NAB sample"
    print(f"### {kind}: {len(corpus)} series, {points:,} points, "
          f"{sum(c.labels.windows for c in corpus)} scored windows\n")
    started = time.perf_counter()
    ours = [calibrated(c.stamps, c.values) for c in corpus]
    seconds = time.perf_counter() - started
    rows = [measure("robust (calibrated score, shipped)", corpus, ours,
                    [DEFAULT_ANOMALY_THRESHOLD] * len(PROFILES))]
    for name, detector in (("baseline: same prediction, raw error ratio", raw_ratio),
                           ("baseline: expanding z-score", expanding_zscore)):
        rows.append(measure(name, corpus, [detector(c.stamps, c.values) for c in corpus],
                            None))
    reproduced = True
    if published_dir is not None:
        checks = []
        for detector_name in PUBLISHED:
            load = published(published_dir, detector_name)
            row = measure(f"published: {detector_name}", corpus, [load(c) for c in corpus],
                          published_thresholds(published_dir, detector_name))
            rows.append(row)
            checks.append((detector_name, row))
        final = published_dir / "final_results.json"
        if full and final.is_file():
            reproduced = print_reproduction(checks, json.loads(final.read_text()))
    print_table(rows)
    print(f"\nScoring time of the shipped detector over the {len(corpus)} series: "
          f"{seconds:.2f} s ({points / seconds:,.0f} points/s)")
    print_per_series(corpus, ours, DEFAULT_ANOMALY_THRESHOLD)
    return reproduced


def print_reproduction(checks: list[tuple[str, Measured]], final: dict[str, Any]) -> bool:
    """Our scorer, at NAB's published thresholds, against NAB's own final_results.json. A
    difference means our scorer is not NAB's: every figure above would then be suspect."""
    print("Scorer check: published detectors at NAB's published per-profile thresholds, "
          "our scorer vs NAB's `results/final_results.json`\n")
    print("| detector | profile | ours | NAB's | difference |")
    print("|---|---|---:|---:|---:|")
    worst = 0.0
    for name, row in checks:
        assert row.fixed is not None
        for profile, got in zip(PROFILES, row.fixed, strict=True):
            theirs = float(final[name][profile.name])
            worst = max(worst, abs(got.score - theirs))
            print(f"| {name} | {profile.name} | {got.score:.6f} | {theirs:.6f} | "
                  f"{got.score - theirs:+.1e} |")
    ok = worst < 1e-6
    print(f"\nLargest difference {worst:.1e}: {'reproduced' if ok else 'NOT REPRODUCED'}\n")
    return ok


# sensitivity and hold-out -----------------------------------------------------------------

VARIANTS = {
    "sharpness": (4.0, 16.0),
    "short": (3, 10),
    "error_span": (300, 1000),
    "history": (4000, 20_000),
    "quiet": (100, 300),
    "quiet_step": (0.0, 0.1),
    "recurrence": (20, 80),
    "lone_recurrence": (1, 10),
    "range_margin": (0.0, 4.0),
}


def run_sensitivity(corpus: list[Series]) -> None:
    """Each setting changed alone from the shipped one; then a hold-out: pick the best of
    a small grid on half the series, score the other half with it and with the shipped
    setting."""
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
    grid = [dataclasses.replace(shipped, short=k, error_span=e, quiet=q)
            for k in (3, 10, 15) for e in (300, 600, 1000) for q in (20, 100, 300)]
    halves = (everything[0::2], everything[1::2])
    print("\n### Hold-out: tuned on one half (27 settings), scored on the other (standard)\n")
    print("| tuned on | picked (short, error_span, quiet) | its score there | "
          "held-out score | shipped on the held-out half |")
    print("|---|---|---:|---:|---:|")
    for tune, test in (halves, halves[::-1]):
        best = max(grid, key=lambda g: scores(g, tune)[0].score)
        names = ", ".join(corpus[i].name.split("/")[-1].removesuffix(".csv") for i in tune)
        print(f"| {names} | {best.short}, {best.error_span}, {best.quiet} | "
              f"{scores(best, tune)[0].score:.1f} | {scores(best, test)[0].score:.1f} | "
              f"{scores(shipped, test)[0].score:.1f} |")


# behaviour on synthetic series ---------------------------------------------------------------


def run_behaviour(threshold: float = DEFAULT_ANOMALY_THRESHOLD) -> None:
    """What the issue asks beyond NAB, on series whose truth is known: rare recurring
    bursts, lone spikes of moderate size, and plain noise (every alarm there is false)."""
    minutes = np.arange(20_000) * 60.0
    print(f"\n### Synthetic series at the default threshold ({threshold:g})\n")
    print("| series | what counts | result |")
    print("|---|---|---:|")
    alarms = []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        values = 0.1 + rng.random(20_000) * 0.05  # idle CPU …
        for start in range(1000, 20_000, 500):  # … bursting to 97 % for 5 of every 500 points
            values[start : start + 5] = 97.0
        alarms.append(len(anomaly.flagged(anomaly.detect("robust", minutes, values), threshold)))
    print(f"| idle CPU, 38 bursts to 97 % (1 % of points), 4 seeds | alarms per series | "
          f"{' / '.join(map(str, alarms))} |")
    for size in (5, 6, 8, 10, 20):
        caught = 0
        for seed in range(20):
            values = np.random.default_rng(seed).normal(50.0, 1.0, 5000)
            values[3000] += size
            hits = anomaly.flagged(anomaly.detect("robust", minutes[:5000], values), threshold)
            caught += bool(((hits >= 3000) & (hits <= 3002)).any())
        print(f"| Gaussian noise, one {size}σ spike, 20 seeds | spikes flagged within 2 points | "
              f"{caught}/20 |")
    for kind, draw in (("Gaussian", lambda r: r.normal(100.0, 5.0, 5000)),
                       ("Poisson(3)", lambda r: r.poisson(3, 5000).astype(float)),
                       ("Laplace", lambda r: r.laplace(100.0, 5.0, 5000))):
        flags = sum(len(anomaly.flagged(anomaly.detect("robust", minutes[:5000],
                                                       draw(np.random.default_rng(seed))),
                                        threshold)) for seed in range(20))
        print(f"| {kind} noise, 20 × 5,000 points | false alarms per 1,000 points | "
              f"{1000 * flags / 100_000:.2f} |")


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
    parser.add_argument("--nab", default=os.environ.get(NAB_ENV),
                        help=f"the full NAB corpus: a NAB checkout or its git directory "
                             f"(default ${NAB_ENV}); without it, the ten-series sample in "
                             f"{SAMPLE} (published detectors then need --published)")
    parser.add_argument("--published", type=Path, default=None,
                        help="a NAB checkout's results/ folder, to score published detectors")
    parser.add_argument("--speed-runs", type=int, default=5)
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--sensitivity", action="store_true",
                        help="settings changed one at a time, and a hold-out check")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nab-") as scratch:
        if args.nab:
            root = nab_checkout(args.nab, Path(scratch))
            published_dir = args.published or root / "results"
        elif SAMPLE.is_dir():
            print(f"Full NAB corpus not given (--nab or ${NAB_ENV}): scoring the ten-series "
                  f"sample in {SAMPLE}, an estimate only.\n", file=sys.stderr)
            root, published_dir = SAMPLE, args.published
        else:
            print(f"No NAB data: neither --nab / ${NAB_ENV} nor {SAMPLE}; skipped.",
                  file=sys.stderr)
            return 0 if args.no_speed else _speed_only(args.speed_runs)
        corpus = load_corpus(root)
        reproduced = run_nab(corpus, published_dir, full=bool(args.nab))
        if args.sensitivity:
            run_sensitivity(corpus)
    run_behaviour()
    if not args.no_speed:
        run_speed(args.speed_runs)
    return 0 if reproduced else 2


def _speed_only(runs: int) -> int:
    run_speed(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
