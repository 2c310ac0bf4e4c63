"""The JSON shapes of answers: what a cache hit and a miss both return, byte for byte."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from opspilot.application.rendering import series_doc, to_json
from opspilot.domain.metrics import Aggregation, BucketValue, Series

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def test_series_points_render_with_isoformat_timestamps_in_bucket_order() -> None:
    buckets = [T0, T0 + timedelta(minutes=1, microseconds=250)]
    series = Series("cpu", "api", Aggregation.P95, "1m", buckets, [1.5, 2.0], [3, 1])

    doc = orjson.loads(to_json(series_doc(series)))

    assert doc == {
        "metric_name": "cpu", "service_name": "api", "aggregation": "p95", "time_bucket": "1m",
        "points": [
            {"timestamp": buckets[0].isoformat(), "value": 1.5, "count": 3},
            {"timestamp": buckets[1].isoformat(), "value": 2.0, "count": 1},
        ],
    }
    assert buckets[1].isoformat() == "2024-03-01T12:01:00.000250+00:00"


def test_an_overflowing_aggregate_renders_as_null_not_invalid_json() -> None:
    series = Series("bytes", None, Aggregation.SUM, "1h", [T0], [float("inf")], [2])

    assert orjson.loads(to_json(series_doc(series)))["points"][0]["value"] is None


def test_series_columns_must_line_up() -> None:
    with pytest.raises(ValueError, match="same length"):
        Series("cpu", None, Aggregation.AVG, "1m", [T0], [1.0, 2.0], [1])


def test_points_view_and_of_points_round_trip() -> None:
    points = [BucketValue(T0, 1.0, 2), BucketValue(T0 + timedelta(minutes=1), 3.0, 4)]
    series = Series.of_points("cpu", None, Aggregation.AVG, "1m", points)

    assert series.points == points
    assert list(series.counts) == [2, 4]
