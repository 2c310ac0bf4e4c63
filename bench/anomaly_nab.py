"""Anomaly detectors on the NAB series, strictly causal, plus speed on a million points.

    .venv/bin/python bench/anomaly_nab.py                  # all detectors, threshold 3
    .venv/bin/python bench/anomaly_nab.py --threshold 4 --speed-runs 3
    .venv/bin/python bench/anomaly_nab.py --window 121     # another robust window

Data: `../shared/data/nab` beside the repository (ten NAB series and
`labels/combined_windows.json`). For every series and detector at one threshold:

- caught: labelled windows with at least one alarm inside them;
- early: for the caught windows, the mean fraction of the window elapsed at the first
  alarm (0 = at the window's start) and the mean minutes after the start;
- false: alarm points outside every window after NAB's probationary period (the first 15 %
  of each series, which NAB does not score either), and in brackets the alarm *events*
  among them (runs of consecutive flagged points);
- probation: alarm points inside that first 15 %.

Causality: when judging point i only points ≤ i are used. The robust detector and the
isolation forest are causal by construction (trailing windows; the forest is refitted on the
prefix and scores forward). The global z-score is not (it uses the mean and deviation of the
whole series), so it is scored here in its causal form, `expanding_zscore`: each point
against the mean and standard deviation of all points before it.

One set of settings for every series (`RobustSettings()`, `ForestSettings()` defaults).
"""

from __future__ import annotations

import argparse
import csv
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

from opspilot.adapters.ai import anomaly

NAB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nab"
PROBATION = 0.15

Detector = Callable[[np.ndarray, np.ndarray], anomaly.Scores]


def detectors(window: int) -> dict[str, Detector]:
    settings = anomaly.RobustSettings(window=window)
    return {
        "z-score (expanding)": lambda t, v: anomaly.expanding_zscore(v),
        "robust": lambda t, v: anomaly.robust(t, v, settings),
        "isolation_forest": lambda t, v: anomaly.isolation_forest(t, v),
    }


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def load_series(name: str) -> tuple[np.ndarray, np.ndarray]:
    with (NAB / "data" / name).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    stamps = np.array([_epoch(r["timestamp"]) for r in rows])
    values = np.array([float(r["value"]) for r in rows])
    return stamps, values


@dataclass
class Outcome:
    windows: int
    caught: int
    early_fraction: list[float]
    early_minutes: list[float]
    false_points: int
    false_events: int
    probation_points: int


def evaluate(stamps: np.ndarray, alarms: np.ndarray, windows: list[tuple[float, float]]
             ) -> Outcome:
    hit = stamps[alarms]
    inside = np.zeros(len(hit), dtype=bool)
    outcome = Outcome(len(windows), 0, [], [], 0, 0, 0)
    for start, end in windows:
        within = (hit >= start) & (hit <= end)
        inside |= within
        if within.any():
            first = float(hit[within][0])
            outcome.caught += 1
            outcome.early_fraction.append((first - start) / (end - start))
            outcome.early_minutes.append((first - start) / 60)
    probation_end = stamps[0] + PROBATION * (stamps[-1] - stamps[0])
    outside = alarms[~inside]
    scored = outside[stamps[outside] > probation_end]
    outcome.false_points = len(scored)
    outcome.false_events = int(np.sum(np.diff(scored, prepend=-2) > 1))
    outcome.probation_points = len(outside) - len(scored)
    return outcome


def run_nab(threshold: float, window: int) -> None:
    labels = json.loads((NAB / "labels" / "combined_windows.json").read_text())
    totals: dict[str, list[Outcome]] = {}
    print(f"### NAB, threshold {threshold}σ, robust window {window}\n")
    print("| series | points | detector | caught | early (fraction · minutes) | false (events)"
          " | probation |")
    print("|---|---:|---|---:|---|---:|---:|")
    for name, spans in labels.items():
        stamps, values = load_series(name)
        windows = [(_epoch(a), _epoch(b)) for a, b in spans]
        for label, detect in detectors(window).items():
            outcome = evaluate(stamps, anomaly.flagged(detect(stamps, values), threshold),
                               windows)
            totals.setdefault(label, []).append(outcome)
            print(f"| {name.split('/')[-1]} | {len(values)} | {label} | "
                  f"{outcome.caught}/{outcome.windows} | {_early(outcome)} | "
                  f"{outcome.false_points} ({outcome.false_events}) | "
                  f"{outcome.probation_points} |")
    _summary(totals)


def _early(outcome: Outcome) -> str:
    if not outcome.early_fraction:
        return "—"
    return (f"{statistics.mean(outcome.early_fraction):.2f} · "
            f"{statistics.mean(outcome.early_minutes):,.0f} min")


def _summary(totals: dict[str, list[Outcome]]) -> None:
    print("\n| detector | windows caught | mean early fraction | false points (events) |"
          " false on the 2 no-anomaly series |")
    print("|---|---:|---:|---:|---:|")
    for label, outcomes in totals.items():
        caught = sum(o.caught for o in outcomes)
        windows = sum(o.windows for o in outcomes)
        fractions = [f for o in outcomes for f in o.early_fraction]
        early = f"{statistics.mean(fractions):.2f}" if fractions else "—"
        false = sum(o.false_points for o in outcomes)
        events = sum(o.false_events for o in outcomes)
        clean = sum(o.false_points + o.probation_points for o in outcomes if o.windows == 0)
        print(f"| {label} | {caught}/{windows} | {early} | {false} ({events}) | {clean} |")


def run_speed(runs: int) -> None:
    rng = np.random.default_rng(7)
    n = 1_000_000
    values = rng.normal(100.0, 5.0, n)
    cases = {
        "z-score (global)": (np.arange(n) * 60.0, lambda t, v: anomaly.zscore(v)),
        "z-score (expanding)": (np.arange(n) * 60.0, lambda t, v: anomaly.expanding_zscore(v)),
        "robust, 1-min step (daily + weekly models)": (np.arange(n) * 60.0, anomaly.robust),
        "robust, 1-hour step (daily + weekly models)": (np.arange(n) * 3600.0, anomaly.robust),
        "robust, no seasonal model": (np.arange(n) * 86_400.0 * 30, anomaly.robust),
    }
    print(f"\n### Speed on {n:,} points (median of {runs} runs)\n")
    print("| detector | seconds | points/s |")
    print("|---|---:|---:|")
    for label, (stamps, detect) in cases.items():
        seconds = _median_time(functools.partial(detect, stamps, values), runs)
        print(f"| {label} | {seconds:.3f} | {n / seconds:,.0f} |")
    forest_n = anomaly.MAX_FOREST_POINTS
    stamps = np.arange(forest_n) * 60.0
    seconds = _median_time(lambda: anomaly.isolation_forest(stamps, values[:forest_n]),
                           max(1, runs // 2))
    print(f"| isolation_forest on {forest_n:,} points (its cap) | {seconds:.3f} | "
          f"{forest_n / seconds:,.0f} |")


def _median_time(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=3.0)
    parser.add_argument("--window", type=int, default=anomaly.RobustSettings().window)
    parser.add_argument("--speed-runs", type=int, default=5)
    parser.add_argument("--no-speed", action="store_true")
    args = parser.parse_args(argv)
    if not NAB.is_dir():
        print(f"NAB data not found at {NAB}", file=sys.stderr)
        return 1
    run_nab(args.threshold, args.window)
    if not args.no_speed:
        run_speed(args.speed_runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
