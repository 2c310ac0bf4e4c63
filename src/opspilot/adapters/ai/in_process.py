"""The Analyzer port answered in this process (the embedded shape, and `opspilot ai`)."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

from opspilot.adapters.ai import anomaly, logmining
from opspilot.domain.analysis import Anomaly, AnomalyRequest, LogCluster, LogLine
from opspilot.domain.errors import LimitExceeded, ValidationError

MAX_POINTS = 1_000_000
MAX_LOGS = 100_000
OFFLOAD_ABOVE = 5_000  # bigger inputs run in a thread so the event loop keeps serving
SAMPLES = 5


def _arrays(request: AnomalyRequest) -> tuple[np.ndarray, np.ndarray]:
    points = request.points
    if not points:
        raise ValidationError("data_points", "the series is empty")
    if len(points) > MAX_POINTS:
        raise LimitExceeded("data_points", f"at most {MAX_POINTS} points")
    minimum = anomaly.MIN_POINTS[request.method.value]
    if len(points) < minimum:
        raise ValidationError(
            "data_points", f"{request.method.value} needs at least {minimum} points"
        )
    if not (0 < request.threshold <= 100) or not math.isfinite(request.threshold):
        raise ValidationError("threshold", "sigmas, greater than 0 and at most 100")
    stamps = np.fromiter((p.timestamp.timestamp() for p in points), float, len(points))
    values = np.fromiter((p.value for p in points), float, len(points))
    if not np.all(np.isfinite(values)):
        raise ValidationError("data_points", "values must be finite numbers")
    if np.any(np.diff(stamps) <= 0):
        raise ValidationError("data_points", "timestamps must be strictly increasing")
    return stamps, values


def _detect(request: AnomalyRequest) -> list[Anomaly]:
    stamps, values = _arrays(request)
    deviation, expected = anomaly.detect(request.method.value, stamps, values)
    flagged = np.nonzero(np.abs(deviation) > request.threshold)[0]
    return [
        Anomaly(
            datetime.fromtimestamp(float(stamps[i]), UTC), float(values[i]),
            float(deviation[i]), float(expected[i]),
        )
        for i in flagged
    ]


def _cluster(lines: Sequence[LogLine], include_members: bool) -> list[LogCluster]:
    if len(lines) > MAX_LOGS:
        raise LimitExceeded("logs", f"at most {MAX_LOGS} logs")
    mined = logmining.mine([line.message for line in lines])
    clusters = []
    for cluster in mined:
        levels = Counter(lines[i].level or "UNKNOWN" for i in cluster.members)
        samples = tuple(lines[i].message for i in cluster.members[:SAMPLES])
        members = tuple(cluster.members) if include_members else None
        clusters.append(
            LogCluster(cluster.pattern, len(cluster.members), dict(levels), samples, members)
        )
    return clusters


class InProcessAnalyzer:
    async def detect_anomalies(self, request: AnomalyRequest) -> list[Anomaly]:
        if len(request.points) > OFFLOAD_ABOVE:
            return await asyncio.to_thread(_detect, request)
        return _detect(request)

    async def cluster_logs(
        self, lines: Sequence[LogLine], include_members: bool = False
    ) -> list[LogCluster]:
        if len(lines) > OFFLOAD_ABOVE:
            return await asyncio.to_thread(_cluster, lines, include_members)
        return _cluster(lines, include_members)
