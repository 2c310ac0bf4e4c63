"""The (project, hour) pairs TimescaleDB's ingest marks for summarising (migration 0008):
each point's epoch-aligned hour, once per project, also before 1970 and on the hour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from opspilot.adapters.postgres.compaction import pending_pairs


def test_each_point_marks_its_projects_hour_once() -> None:
    hour = datetime(2024, 2, 27, 10, tzinfo=UTC)
    rows = [("a", hour), ("a", hour + timedelta(minutes=59, microseconds=999_999)),
            ("b", hour + timedelta(minutes=30)), ("a", hour + timedelta(hours=1)),
            ("a", datetime(1969, 12, 31, 23, 59, tzinfo=UTC))]
    projects, periods = pending_pairs((p, ts, "cpu", 1.0, None, None) for p, ts in rows)
    assert list(zip(projects, periods, strict=True)) == [
        ("a", datetime(1969, 12, 31, 23, tzinfo=UTC)), ("a", hour),
        ("a", hour + timedelta(hours=1)), ("b", hour)]


def test_no_points_no_pairs() -> None:
    assert pending_pairs([]) == ([], [])
