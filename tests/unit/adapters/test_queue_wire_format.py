"""The queue's wire format: a batch survives encode → decode exactly, whatever the offsets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from opspilot.adapters.queue_wire_format import UndecodableMessage, decode_batch, encode_batch
from opspilot.domain.ingest import LogBatch, MetricBatch
from opspilot.domain.logs import LogLevel, LogRecord
from opspilot.domain.metrics import MetricPoint
from opspilot.entrypoints.api.schemas import MetricsIngestBody

RECEIVED = datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def test_points_from_the_api_round_trip_with_offsets_and_microseconds() -> None:
    """The API's pydantic datetimes (their own tzinfo type) are what the wire format is given."""
    body = MetricsIngestBody.model_validate({"metrics": [
        {"name": "a", "value": 1, "timestamp": "2024-03-01T10:00:00.000001Z",
         "tags": {"k": "v"}},
        {"name": "b", "value": 2.5, "timestamp": "2024-03-01T10:00:00+05:30", "service": "api"},
        {"name": "c", "value": -3, "timestamp": "2024-02-29T23:59:59.999999-08:00"},
    ]})
    points = [MetricPoint("p", m.timestamp, m.name, float(m.value), m.service, m.tags)
              for m in body.metrics]
    batch = decode_batch(encode_batch(MetricBatch("m1", "p", RECEIVED, points)))

    assert isinstance(batch, MetricBatch)
    assert batch.received_at == RECEIVED
    assert [(p.timestamp, p.name, p.value, p.service, dict(p.tags)) for p in batch.points] == [
        (datetime(2024, 3, 1, 10, 0, 0, 1, tzinfo=UTC), "a", 1.0, None, {"k": "v"}),
        (datetime(2024, 3, 1, 4, 30, tzinfo=UTC), "b", 2.5, "api", {}),
        (datetime(2024, 3, 1, 7, 59, 59, 999999, tzinfo=UTC), "c", -3.0, None, {}),
    ]
    assert batch.points[1].timestamp.utcoffset() == timedelta(hours=5, minutes=30)
    assert batch.points[2].timestamp.tzinfo == timezone(timedelta(hours=-8))


@pytest.mark.parametrize("body", [b"", b"not json", b'{"v":99}', b'{"v":1,"kind":"metrics"}'])
def test_what_cannot_be_decoded_says_so(body: bytes) -> None:
    with pytest.raises(UndecodableMessage):
        decode_batch(body)


def test_log_records_round_trip_with_offsets_context_and_nulls() -> None:
    records = [
        LogRecord("m1-00000", "p", datetime(2024, 3, 1, 10, 0, 0, 5, tzinfo=UTC), LogLevel.ERROR,
                  "db down ☃", "api", "t-1", "c-1", {"nested": {"k": [1, "x", None]}}),
        LogRecord("m1-00001", "p", datetime(2024, 3, 1, 15, 30, tzinfo=timezone(timedelta(
            hours=5, minutes=30))), LogLevel.INFO, "ok"),
    ]
    batch = decode_batch(encode_batch(LogBatch("m1", "p", RECEIVED, records)))

    assert isinstance(batch, LogBatch)
    assert list(batch.records) == records
    assert batch.records[1].timestamp.utcoffset() == timedelta(hours=5, minutes=30)
