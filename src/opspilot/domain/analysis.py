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
    ZSCORE = "z-score"
    ROBUST = "robust"  # rolling median/MAD, seasonality-aware
    ISOLATION_FOREST = "isolation_forest"


@attrs.frozen
class DataPoint:
    timestamp: datetime
    value: float


@attrs.frozen
class Anomaly:
    timestamp: datetime
    value: float
    deviation: float  # signed, in robust sigmas from the expected value
    expected: float | None = None


@attrs.frozen
class AnomalyRequest:
    metric_name: str
    points: Sequence[DataPoint]
    method: AnomalyMethod = AnomalyMethod.ROBUST
    threshold: float = 3.0


@attrs.frozen
class LogLine:
    message: str
    level: str | None = None


@attrs.frozen
class LogCluster:
    pattern: str
    count: int
    levels: dict[str, int]
    samples: tuple[str, ...]
    members: tuple[int, ...] | None = None  # positions of the input lines, when asked


class Analyzer(Protocol):
    """Anomaly detection and log pattern mining.

    Raises `opspilot.domain.errors.ValidationError` for input the method cannot use (too few
    points, unsorted or duplicate timestamps, non-finite values) and
    `opspilot.domain.errors.ServiceUnavailable` when a remote analyzer cannot answer.
    """

    async def detect_anomalies(self, request: AnomalyRequest) -> list[Anomaly]: ...

    async def cluster_logs(
        self, lines: Sequence[LogLine], include_members: bool = False
    ) -> list[LogCluster]: ...
