"""Pure domain rules: durations, buckets, ranges, aggregations, cursors, spikes, search."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from opspilot.domain import textsearch
from opspilot.domain.errors import LimitExceeded, ValidationError
from opspilot.domain.logs import CountBucket, Cursor, LogLevel, flag_spikes
from opspilot.domain.metrics import (
    Aggregation,
    MetricPoint,
    aggregate,
    bin_index,
    percentile_cont,
)
from opspilot.domain.timewindow import Bucketing, TimeRange, parse_duration

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("text", "seconds"), [
    ("1m", 60), ("5m", 300), ("15m", 900), ("1h", 3600), ("1d", 86400), ("30s", 30), ("7d", 604800),
])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text, "time_bucket") == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "0m", "5", "m", "1w", "-1m", "1.5h", "9999999s"])
def test_bad_durations_name_the_field(text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_duration(text, "time_bucket")
    assert caught.value.field == "time_bucket"


def test_buckets_align_to_the_epoch() -> None:
    five = Bucketing.parse("5m")
    assert five.floor(datetime(2024, 1, 1, 10, 7, 31, tzinfo=UTC)) == datetime(
        2024, 1, 1, 10, 5, tzinfo=UTC)
    window = TimeRange(datetime(2024, 1, 1, 10, 7, tzinfo=UTC), datetime(2024, 1, 1, 10, 20, tzinfo=UTC))
    assert [s.minute for s in five.starts_over(window)] == [5, 10, 15]
    assert five.count_over(window) == 3


def test_bucket_cap() -> None:
    window = TimeRange(T0, T0 + timedelta(days=30))
    with pytest.raises(LimitExceeded):
        Bucketing.parse("1m").check_count(window, 10_000)
    Bucketing.parse("1h").check_count(window, 10_000)


def test_ranges_need_zones_order_and_a_bound() -> None:
    with pytest.raises(ValidationError, match="time zone"):
        TimeRange.checked(datetime(2024, 1, 1), T0)
    with pytest.raises(ValidationError) as caught:
        TimeRange.checked(T0, T0)
    assert caught.value.field == "end_time"
    with pytest.raises(LimitExceeded):
        TimeRange.checked(T0, T0 + timedelta(days=91), timedelta(days=90))


def test_percentiles_match_sql_percentile_cont() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile_cont(values, 0.5) == 2.5
    assert percentile_cont(values, 0.95) == pytest.approx(3.85)
    assert aggregate([5.0, 1.0, 3.0], Aggregation.P50) == 3.0
    assert aggregate([2.0, 4.0], Aggregation.AVG) == 3.0
    assert aggregate([2.0, 4.0], Aggregation.COUNT) == 2.0


def test_unknown_aggregation() -> None:
    with pytest.raises(ValidationError, match="one of avg"):
        Aggregation.parse("median")


def test_histogram_puts_the_maximum_in_the_last_bin() -> None:
    assert bin_index(10.0, 0.0, 10.0, 5) == 4
    assert bin_index(0.0, 0.0, 10.0, 5) == 0
    assert bin_index(3.0, 3.0, 3.0, 5) == 0


def test_points_refuse_non_finite_and_naive() -> None:
    with pytest.raises(ValidationError):
        MetricPoint("p", T0, "x", float("nan"))
    with pytest.raises(ValidationError):
        MetricPoint("p", datetime(2024, 1, 1), "x", 1.0)


def test_cursor_round_trip_and_forgery() -> None:
    cursor = Cursor(T0, "batch-00001")
    assert Cursor.decode(cursor.encode()) == cursor
    with pytest.raises(ValidationError):
        Cursor.decode("not-a-cursor")


def test_levels_accept_common_aliases() -> None:
    assert LogLevel.parse("warning") is LogLevel.WARN
    assert LogLevel.parse("Error") is LogLevel.ERROR
    with pytest.raises(ValidationError):
        LogLevel.parse("LOUD")


def test_spikes_compare_with_the_past_only() -> None:
    counts = [CountBucket(T0 + timedelta(minutes=i), c) for i, c in enumerate([2, 3, 2, 2, 3, 2, 20, 3])]
    flagged = flag_spikes(counts)
    assert [b.spike for b in flagged] == [False] * 6 + [True, False]
    assert flagged[6].baseline == 2.0


def test_small_absolute_changes_are_not_spikes() -> None:
    counts = [CountBucket(T0 + timedelta(minutes=i), c) for i, c in enumerate([0, 0, 0, 0, 2])]
    assert not any(b.spike for b in flag_spikes(counts))


@pytest.mark.parametrize(("query", "message", "expected"), [
    ("database", "Database connection failed", True),
    ("database failed", "Database connection failed", True),
    ("database timeout", "Database connection failed", False),
    ('"connection failed"', "Database connection failed", True),
    ('"failed connection"', "Database connection failed", False),
    ("conn*", "Database connection failed", True),
    ("-connection database", "Database connection failed", False),
    ("(c:d)", "a c:d b", True),
    ("(c:d)", "a c d", False),
])
def test_search_semantics(query: str, message: str, expected: bool) -> None:
    assert textsearch.matches(textsearch.parse(query), message) is expected
