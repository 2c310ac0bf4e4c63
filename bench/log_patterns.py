"""Log template mining on the LogHub 2k samples: our miner against drain3, same run.

    .venv/bin/python bench/log_patterns.py               # accuracy + speed, Content column
    .venv/bin/python bench/log_patterns.py --raw         # also whole raw lines (with headers)
    .venv/bin/python bench/log_patterns.py --holdout     # also the 4/4 tuning sanity check

Data: `../shared/data/loghub` beside the repository. Score: grouping accuracy (Zhu et al.,
ICSE-SEIP 2019) — a line is correct when the set of lines its cluster holds is exactly the
set sharing its ground-truth EventId; accuracy = correct lines / lines. Input: the
`Content` column (the message after the header), as the benchmark defines it.

drain3 runs as shipped: `drain3.TemplateMiner()` with its default config (no masking
instructions, depth 4, similarity 0.4). Speed: lines per second of one fresh miner over the
2,000 lines, median of `--runs` runs (default 5), both miners interleaved on the same
machine; "all" is 16,000 lines over the summed medians.
"""

from __future__ import annotations

import argparse
import csv
import logging
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from opspilot.adapters.ai.logmining import MinerSettings, TemplateMiner

LOGHUB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "loghub"
DATASETS = ["HDFS", "Apache", "Zookeeper", "Spark", "BGL", "Linux", "HealthApp", "Proxifier"]

Miner = Callable[[Sequence[str]], list[int]]


def ours(settings: MinerSettings | None = None) -> Miner:
    def run(messages: Sequence[str]) -> list[int]:
        miner = TemplateMiner(settings)
        ids = [miner.add(m) for m in messages]
        return [miner.resolve(i) for i in ids]

    return run


def drain3_miner() -> Miner | None:
    try:
        from drain3 import TemplateMiner as Drain3
    except ImportError:
        return None
    logging.getLogger("drain3").setLevel(logging.ERROR)
    logging.disable(logging.INFO)  # drain3 logs "config file not found" per instance

    def run(messages: Sequence[str]) -> list[int]:
        miner = Drain3()
        return [miner.add_log_message(m)["cluster_id"] for m in messages]

    return run


def load(name: str, raw: bool = False) -> tuple[list[str], list[str]]:
    with (LOGHUB / name / f"{name}_2k.log_structured.csv").open(newline="",
                                                                 encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    truth = [r["EventId"] for r in rows]
    if raw:
        text = (LOGHUB / name / f"{name}_2k.log").read_text(encoding="utf-8", errors="replace")
        return text.splitlines(), truth
    return [r["Content"] for r in rows], truth


def grouping_accuracy(predicted: Sequence[int], truth: Sequence[str]) -> float:
    by_event: dict[str, list[int]] = defaultdict(list)
    for i, event in enumerate(truth):
        by_event[event].append(i)
    sizes = Counter(predicted)
    correct = 0
    for lines in by_event.values():
        groups = {predicted[i] for i in lines}
        if len(groups) == 1 and sizes[next(iter(groups))] == len(lines):
            correct += len(lines)
    return correct / len(truth)


def lines_per_second(miner: Miner, messages: Sequence[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        miner(messages)
        times.append(time.perf_counter() - started)
    return len(messages) / statistics.median(times)


def accuracy_table(miners: dict[str, Miner], raw: bool, runs: int) -> None:
    data = {name: load(name, raw) for name in DATASETS}
    names = list(miners)
    columns = [f"{n} accuracy" + (f" | {n} lines/s" if runs else "") for n in names]
    print(f"| dataset | {' | '.join(columns)} |")
    print("|---|" + "---:|" * (len(names) * (2 if runs else 1)))
    accuracy: dict[str, list[float]] = {n: [] for n in names}
    seconds: dict[str, float] = dict.fromkeys(names, 0.0)
    for dataset, (messages, truth) in data.items():
        cells = []
        for name, miner in miners.items():
            accuracy[name].append(grouping_accuracy(miner(messages), truth))
            cells.append(f"{accuracy[name][-1]:.4f}")
            if runs:
                speed = lines_per_second(miner, messages, runs)
                seconds[name] += len(messages) / speed
                cells[-1] += f" | {speed:,.0f}"
        print(f"| {dataset} | " + " | ".join(cells) + " |")
    total = sum(len(m) for m, _ in data.values())
    cells = [f"**{statistics.mean(accuracy[n]):.4f}**"
             + (f" | **{total / seconds[n]:,.0f}**" if runs else "") for n in names]
    print("| **average / all** | " + " | ".join(cells) + " |")


def holdout() -> None:
    """Tune the one free constant (min_slot_values) on four datasets, score the other four."""
    halves = (DATASETS[:4], DATASETS[4:])
    candidates = (2, 3, 4, 5, 6, 8, 1_000_000)
    data = {name: load(name) for name in DATASETS}

    def mean_accuracy(names: Sequence[str], k: int) -> float:
        miner = ours(MinerSettings(min_slot_values=k))
        return statistics.mean(grouping_accuracy(miner(data[n][0]), data[n][1]) for n in names)

    print("| tuned on | best min_slot_values (train accuracy) | held-out datasets |"
          " held-out accuracy | held-out with the shipped 4 |")
    print("|---|---:|---|---:|---:|")
    for train, test in (halves, halves[::-1]):
        scores = {k: mean_accuracy(train, k) for k in candidates}
        best = max(candidates, key=lambda k: (round(scores[k], 6), -k))
        print(f"| {', '.join(train)} | {best} ({scores[best]:.4f}) | {', '.join(test)} | "
              f"{mean_accuracy(test, best):.4f} | {mean_accuracy(test, 4):.4f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="speed runs per dataset (0: none)")
    parser.add_argument("--raw", action="store_true", help="also score whole raw lines")
    parser.add_argument("--holdout", action="store_true", help="also the 4/4 tuning check")
    args = parser.parse_args(argv)
    if not LOGHUB.is_dir():
        print(f"LogHub samples not found at {LOGHUB}", file=sys.stderr)
        return 1
    miners = {"opspilot": ours()}
    drain = drain3_miner()
    if drain is None:
        print("drain3 is not installed (pip install -e '.[bench]'): ours only\n")
    else:
        miners["drain3"] = drain
    print("### Content column (the benchmark's input)\n")
    accuracy_table(miners, raw=False, runs=args.runs)
    if args.raw:
        print("\n### Whole raw lines, headers included (robustness; not the benchmark)\n")
        accuracy_table(miners, raw=True, runs=0)
    if args.holdout:
        print("\n### Tuning sanity check: tune on four datasets, score the other four\n")
        holdout()
    return 0


if __name__ == "__main__":
    sys.exit(main())
