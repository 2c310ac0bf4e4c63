"""What a histogram's `<name>_bucket` counters say per bucket of time: for each `le`
bound, how many observations at or below it arrived (the input of histogram_quantile).

The samples of one histogram series (service and tags but `le`) taken at one time are one
EXPORT: its cumulative counts at ITS bounds. Exports of one series need not share bounds:
an OTLP exponential histogram sends only the buckets its observations reached and lowers
its scale as their range grows, so a bound may be missing from one export and present in
the next. Reading each `le` as a counter of its own (Prometheus' way, right for fixed
bounds) then loses observations: a bound that first appears grows from nothing known, and
a delta export of small values is missing at every large bound although all its
observations lie below it.

So every export is read at every bound as it holds at its own largest bound at or below
it (nothing below its lowest). That reading is exact whenever both exports' bounds come
from one grid (an exponential histogram's bounds at one scale or a finer one always do;
fixed bounds trivially) and within one bucket of the coarser export otherwise. In
practice each export becomes what each of its bounds ADDS beyond its previous bound; per
bucket of time those additions are summed per bound and run up over the bounds:

- a delta export adds its own additions, at its time;
- a cumulative export adds its additions minus those of the series' previous export (the
  growth since then), at its time; a series' first export grows from nothing known and
  adds nothing (its predecessor may lie up to COUNTER_LOOKBACK before the window), and an
  export whose total fell below the previous one's is a reset: it adds its own additions.

A bound is answered in a bucket of time when some export there counts it (its growth or
delta adds at it); bounds only a previous export had (a finer scale since lowered) still
take part in the running sum. The PostgreSQL store computes the same in SQL
(adapters/postgres/metrics.py: bucket_increases_sql); the in-memory store with this module.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

import attrs

# `le` texts read as bounds, the same in every store: Prometheus' formatting ("0.005",
# "1e+06", "+Inf") and plain decimals; anything else is not a bucket of the histogram.
# The exponent is capped at 4 digits so that PostgreSQL's numeric reads every match.
BOUND_PATTERN = r"^[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]{1,4})?$"
INFINITY_PATTERN = r"^\+?inf(inity)?$"  # matched without regard to case
_BOUND = re.compile(BOUND_PATTERN)
_INFINITY = re.compile(INFINITY_PATTERN, re.IGNORECASE)


def bucket_bound(le: str) -> float | None:
    """The upper bound an `le` text names, or None when it names none."""
    if _INFINITY.match(le):
        return math.inf
    if _BOUND.match(le):
        return float(le)
    return None


@attrs.frozen
class Export:
    """One histogram series' samples at one time: (bound, le, cumulative count)."""

    at: datetime
    counts: tuple[tuple[float, str, float], ...]

    @property
    def total(self) -> float:
        return max(count for _, _, count in self.counts)

    def additions(self) -> list[tuple[float, str, float]]:
        """(bound, le, what the bound adds beyond the export's previous bound)."""
        added, previous = [], 0.0
        for bound, le, count in sorted(self.counts):
            added.append((bound, le, count - previous))
            previous = count
        return added


@attrs.frozen
class Addition:
    """What one export adds at one bound, at a time; `counted` when it is that export's
    own (a delta, or a growth's new side), not the subtracted previous export's."""

    at: datetime
    bound: float
    le: str
    added: float
    counted: bool


def series_additions(exports: Sequence[Export], start: datetime, delta: bool
                     ) -> Iterator[Addition]:
    """The additions of ONE series' exports (in time order, read from COUNTER_LOOKBACK
    before `start`) that fall at or after `start`."""
    for index, export in enumerate(exports):
        if export.at < start or (not delta and index == 0):
            continue
        for bound, le, added in export.additions():
            yield Addition(export.at, bound, le, added, True)
        previous = exports[index - 1] if index else None
        if delta or previous is None or export.total < previous.total:
            continue
        for bound, le, added in previous.additions():
            yield Addition(export.at, bound, le, -added, False)


def counts_per_bound(additions: Iterable[Addition]) -> dict[str, tuple[float, int]]:
    """For ONE bucket of time: per `le` that some export counts there, the observations at
    or below its bound (the running sum of the additions) and how many exports count it.
    Ties between texts of one value go in text order."""
    summed: dict[tuple[float, str], list[float]] = {}
    counted: dict[tuple[float, str], int] = {}
    for a in additions:
        summed.setdefault((a.bound, a.le), []).append(a.added)
        counted[(a.bound, a.le)] = counted.get((a.bound, a.le), 0) + a.counted
    found, running = {}, 0.0
    for key in sorted(summed):
        running += math.fsum(summed[key])
        if counted[key]:
            found[key[1]] = (running, counted[key])
    return found
