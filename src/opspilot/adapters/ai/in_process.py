"""The Analyzer port answered in this process (the embedded shape, and behind `opspilot ai`).

Domain models become numpy arrays here and results become domain models again; the
algorithms live in `anomaly` and `logmining`. Large or slow jobs run in a worker thread
(`asyncio.to_thread`) so the event loop keeps serving, at most `max_parallel` at a time so a
burst queues instead of thrashing the CPUs.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from opspilot.adapters.ai import anomaly, logmining
from opspilot.domain.analysis import (
    Anomaly,
    AnomalyMethod,
    AnomalyReport,
    AnomalyRequest,
    DataPoint,
    LogCluster,
    LogLine,
)
from opspilot.domain.errors import LimitExceeded, ValidationError

MAX_POINTS = anomaly.MAX_POINTS
MAX_LOGS = 100_000
SAMPLES = 5
INLINE_POINTS = 2_000  # below this a run takes ~1 ms: no thread hop
INLINE_LOGS = 1_000

T = TypeVar("T")


class InProcessAnalyzer:
    def __init__(self, max_parallel: int | None = None) -> None:
        self._parallel = max_parallel or os.cpu_count() or 2
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    async def detect_anomalies(self, request: AnomalyRequest) -> AnomalyReport:
        heavy = len(request.points) > INLINE_POINTS
        return await self._run(heavy, detect_anomalies_sync, request)

    async def cluster_logs(
        self, lines: Sequence[LogLine], include_members: bool = False
    ) -> list[LogCluster]:
        heavy = len(lines) > INLINE_LOGS
        return await self._run(heavy, lambda: cluster_logs_sync(lines, include_members))

    async def _run(self, heavy: bool, fn: Callable[..., T], *args: object) -> T:
        if not heavy:
            return fn(*args)
        async with self._semaphore():
            return await asyncio.to_thread(fn, *args)

    def _semaphore(self) -> asyncio.Semaphore:
        # One per event loop: a semaphore is bound to the loop it first waited on, and one
        # analyzer may outlive a loop (tests, a CLI that runs several).
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(self._parallel))
        return self._slots[1]


def detect_anomalies_sync(request: AnomalyRequest) -> AnomalyReport:
    """Validate, score, and return the points reaching the threshold (in input order; one
    per timestamp, with the mean of the points sharing it) and, if asked, every score."""
    method = _method(request.method)
    points = request.points
    if len(points) > MAX_POINTS:  # before building arrays for an oversized payload
        raise LimitExceeded("data_points", f"at most {MAX_POINTS} points", limit=MAX_POINTS)
    stamps, values = _arrays(points)
    anomaly.validate(stamps, values, method, request.threshold)
    distinct, means, merged = anomaly.merge_duplicates(stamps, values)
    scores = anomaly.detect(method, distinct, means)
    first_of = np.full(len(distinct), len(points))
    np.minimum.at(first_of, merged, np.arange(len(points)))
    def found(i: int) -> Anomaly:
        return Anomaly(points[first_of[i]].timestamp, float(means[i]), float(scores.score[i]),
                       float(scores.deviation[i]), _finite_or_none(scores.expected[i]))

    every = tuple(scores.score[merged].tolist()) if request.include_scores else None
    since = anomaly.ongoing_since(scores, request.threshold)
    return AnomalyReport(tuple(found(i) for i in anomaly.flagged(scores, request.threshold)),
                         every, None if since is None else found(since))


def _method(method: str) -> str:
    try:
        return AnomalyMethod(method).value
    except ValueError:
        choices = ", ".join(m.value for m in AnomalyMethod)
        raise ValidationError("method", f"one of {choices}") from None


def _arrays(points: Sequence[DataPoint]) -> tuple[np.ndarray, np.ndarray]:
    stamps = np.empty(len(points))
    values = np.empty(len(points))
    for i, point in enumerate(points):
        if point.timestamp.tzinfo is None:
            raise ValidationError("data_points", "timestamps need a time zone", index=i)
        stamps[i] = point.timestamp.timestamp()
        try:
            values[i] = point.value
        except (TypeError, ValueError):
            raise ValidationError("data_points", "values must be numbers", index=i) from None
    return stamps, values


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def cluster_logs_sync(lines: Sequence[LogLine], include_members: bool = False
                      ) -> list[LogCluster]:
    """Mine templates; clusters come largest first with their level mix and samples."""
    if len(lines) > MAX_LOGS:
        raise LimitExceeded("logs", f"at most {MAX_LOGS} logs", limit=MAX_LOGS)
    mined = logmining.mine([line.message for line in lines])
    return [_cluster(lines, found, include_members) for found in mined]


def _cluster(lines: Sequence[LogLine], found: logmining.MinedCluster, include_members: bool
             ) -> LogCluster:
    levels = Counter((lines[i].level or "UNKNOWN").upper() for i in found.members)
    samples = tuple(lines[i].message for i in found.members[:SAMPLES])
    members = found.members if include_members else None
    return LogCluster(found.template, found.size, dict(levels), samples, members)
