"""LogMetadataStore contract: counts by project, half-open window and level; redelivery of a
batch (same message id) writes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from opspilot.domain.ingest import LogBatch
from opspilot.domain.logs import LogLevel, LogRecord, log_id_for
from opspilot.domain.timewindow import TimeRange

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
A, B = "project-a", "project-b"
LEVELS = [LogLevel.INFO, LogLevel.INFO, LogLevel.ERROR, LogLevel.WARN, LogLevel.DEBUG]


def log_batch(message_id: str, project: str, count: int, start: datetime = T0) -> LogBatch:
    records = [
        LogRecord(log_id_for(message_id, i), project, start + timedelta(seconds=i),
                  LEVELS[i % len(LEVELS)], f"line {i}", "api" if i % 2 else None)
        for i in range(count)
    ]
    return LogBatch(message_id, project, T0, records)


async def test_counts_by_window_and_level(log_metadata_store: Any) -> None:
    assert await log_metadata_store.write_batches([log_batch("m-1", A, 50)]) == 50
    everything = TimeRange(T0 - timedelta(days=1), T0 + timedelta(days=1))
    assert await log_metadata_store.count(A, everything) == 50
    assert await log_metadata_store.count(A, everything, LogLevel.INFO) == 20
    assert await log_metadata_store.count(A, everything, LogLevel.ERROR) == 10
    assert await log_metadata_store.count(A, everything, LogLevel.FATAL) == 0
    # half-open [start, end): the record at 12:00:10 belongs to the next window
    window = TimeRange(T0, T0 + timedelta(seconds=10))
    assert await log_metadata_store.count(A, window) == 10
    assert await log_metadata_store.count(A, TimeRange(T0 + timedelta(seconds=10),
                                                       T0 + timedelta(seconds=11))) == 1


async def test_redelivered_batch_writes_nothing(log_metadata_store: Any) -> None:
    everything = TimeRange(T0 - timedelta(days=1), T0 + timedelta(days=1))
    batch = log_batch("m-1", A, 7)
    assert await log_metadata_store.write_batches([batch]) == 7
    assert await log_metadata_store.write_batches([batch]) == 0
    assert await log_metadata_store.write_batches([batch, log_batch("m-2", A, 3),
                                                   log_batch("m-2", A, 3)]) == 3
    assert await log_metadata_store.count(A, everything) == 10
    assert await log_metadata_store.write_batches([]) == 0


async def test_project_b_never_counts_project_a(log_metadata_store: Any) -> None:
    everything = TimeRange(T0 - timedelta(days=1), T0 + timedelta(days=1))
    await log_metadata_store.write_batches([log_batch("m-a", A, 20), log_batch("m-b", B, 4)])
    assert await log_metadata_store.count(B, everything) == 4
    assert await log_metadata_store.count(B, everything, LogLevel.INFO) == 2
    assert await log_metadata_store.count("project-c", everything) == 0


async def test_far_off_timestamps_are_counted(log_metadata_store: Any) -> None:
    old = datetime(2001, 1, 1, tzinfo=UTC)
    await log_metadata_store.write_batches([log_batch("m-old", A, 3, start=old)])
    assert await log_metadata_store.count(A, TimeRange(old, old + timedelta(hours=1))) == 3


async def test_drop_before_removes_whole_days_before_the_cutoff_day(log_metadata_store: Any) -> None:
    old = datetime(2024, 2, 27, 12, tzinfo=UTC)
    await log_metadata_store.write_batches([
        log_batch("old", A, 5, start=old), log_batch("old-b", B, 5, start=old),
        log_batch("cutoff-day", A, 5, start=datetime(2024, 2, 29, 0, 0, tzinfo=UTC)),
        log_batch("new", A, 5),
    ])
    assert await log_metadata_store.drop_before(datetime(2024, 2, 29, 6, tzinfo=UTC))
    everything = TimeRange(datetime(2024, 2, 20, tzinfo=UTC), T0 + timedelta(days=1))
    assert await log_metadata_store.count(A, everything) == 10
    assert await log_metadata_store.count(B, everything) == 0



async def test_unstorable_text_refuses_the_whole_call_with_records_rejected(
    log_metadata_store: Any,
) -> None:
    from opspilot.domain.errors import RecordsRejected

    good = log_batch("good", "p", 3)
    bad = LogBatch("bad", "p", T0, [LogRecord(log_id_for("bad", 0), "p", T0, LogLevel.INFO,
                                              "m", "svc\x00")])
    with pytest.raises(RecordsRejected):
        await log_metadata_store.write_batches([good, bad])
    assert await log_metadata_store.write_batches([good]) == 3  # nothing of the call was kept
