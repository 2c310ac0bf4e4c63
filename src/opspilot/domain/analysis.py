"""Analysis models: anomaly detection over a series and log pattern clustering.

The algorithms live behind the `Analyzer` port (adapters/ai): in-process in the embedded
shape, over HTTP to `opspilot ai` in a real deployment.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

import attrs


class AnomalyMethod(enum.StrEnum):
    # Seasonality-aware rolling-median prediction, its errors calibrated into an anomaly
    # likelihood (ADR 0012). The z-score and isolation forest were removed: on NAB they
    # scored below a windowed Gaussian.
    ROBUST = "robust"


# A score is −log10(p)/10 of the tail probability p of the recent prediction errors
# (0.75 ⇔ p ≈ 3e-8), the same on every series. Chosen on the NAB sweep (docs/benchmarks-ai.md).
DEFAULT_ANOMALY_THRESHOLD = 0.75


@attrs.frozen
class DataPoint:
    timestamp: datetime
    value: float


@attrs.frozen
class Anomaly:
    """A bucket that stands out: its value, how far from `expected` (signed sigmas)."""

    timestamp: datetime
    value: float
    score: float  # calibrated, in [0, 1]: the same threshold means the same on any series
    deviation: float  # signed, in long-run error scales from the expected value
    expected: float | None = None


@attrs.frozen
class AnomalyRequest:
    """Points in time order; points sharing a timestamp are one observation, their mean."""

    metric_name: str
    points: Sequence[DataPoint]
    method: AnomalyMethod = AnomalyMethod.ROBUST
    threshold: float = DEFAULT_ANOMALY_THRESHOLD  # a score in (0, 1]
    include_scores: bool = False


@attrs.frozen
class AnomalyReport:
    """The points scoring at least the threshold (one per distinct timestamp, input order)
    and, when asked, every input point's score in input order (0 while warming up).

    An anomaly is reported once, where it starts (its score); `ongoing` is that anomaly
    while the series' last point is still part of it (its likelihood has stayed at or above
    the threshold since), else None. An anomaly rule stays breached exactly that long."""

    anomalies: tuple[Anomaly, ...]
    scores: tuple[float, ...] | None = None
    ongoing: Anomaly | None = None


@attrs.frozen
class LogLine:
    message: str
    level: str | None = None


@attrs.frozen
class LogCluster:
    """Logs sharing one template (`<*>` where they differ): count, levels, samples."""

    pattern: str
    count: int
    levels: dict[str, int]
    samples: tuple[str, ...]
    members: tuple[int, ...] | None = None  # positions of the input lines, when asked


class Analyzer(Protocol):
    """Anomaly detection and log pattern mining.

    Raises `opspilot.domain.errors.ValidationError` for input the method cannot use (too few
    distinct timestamps, unsorted timestamps, non-finite values) and
    `opspilot.domain.errors.ServiceUnavailable` when a remote analyzer cannot answer.
    """

    async def detect_anomalies(self, request: AnomalyRequest) -> AnomalyReport: ...

    async def cluster_logs(
        self, lines: Sequence[LogLine], include_members: bool = False
    ) -> list[LogCluster]: ...
