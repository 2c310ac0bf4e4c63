"""The documented limits every use case enforces (configurable through settings)."""

from __future__ import annotations

from datetime import timedelta

import attrs


@attrs.frozen
class QueryLimits:
    max_range: timedelta = timedelta(days=90)
    max_buckets: int = 11_000
    max_series_per_overlay: int = 20
    max_histogram_bins: int = 200
    max_pattern_logs: int = 10_000
    max_search_length: int = 1_000
