"""/api/v1/metadata answers each metric family's type, help and unit from what the ingest
protocols said (OTLP's data kinds, descriptions and units; remote-write's metadata, also in
requests of their own), and from naming conventions only where nothing was said."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import cramjam
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)

from opspilot.adapters.clock_and_ids import FixedClock
from opspilot.adapters.queue_wire_format import decode_batch, encode_batch
from opspilot.domain.ingest import MetricBatch
from opspilot.domain.metrics import MetricMetadata, MetricType
from opspilot.entrypoints.api.remote_write.metadata import MetricMetadataMessage
from opspilot.entrypoints.api.remote_write.remote_write_pb2 import (
    Label,
    Sample,
    TimeSeries,
    WriteRequest,
)
from tests.unit.conftest import drain

REMOTE = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime.now(UTC))


def _otlp(at_ns: int) -> bytes:
    point = NumberDataPoint(time_unix_nano=at_ns, as_double=3.0)
    metrics = [
        Metric(name="orders", description="Orders placed", unit="1",
               sum=Sum(data_points=[point], is_monotonic=True, aggregation_temporality=2)),
        Metric(name="queue_size", description="Jobs waiting",
               sum=Sum(data_points=[point], is_monotonic=False, aggregation_temporality=2)),
        Metric(name="temperature", description="Room temperature", unit="Cel",
               gauge=Gauge(data_points=[point])),
        Metric(name="latency", description="Request latency", unit="s",
               histogram=Histogram(aggregation_temporality=2, data_points=[HistogramDataPoint(
                   time_unix_nano=at_ns, count=3, sum=1.5, explicit_bounds=[0.5, 1.0],
                   bucket_counts=[1, 1, 1])])),
    ]
    return ExportMetricsServiceRequest(resource_metrics=[ResourceMetrics(
        scope_metrics=[ScopeMetrics(metrics=metrics)])]).SerializeToString()


def _remote(ms: int, with_series: bool, *described: tuple[int, str, str, str]) -> bytes:
    series = [TimeSeries(labels=[Label(name="__name__", value="http_requests_total"),
                                 Label(name="job", value="web")],
                         samples=[Sample(value=5.0, timestamp=ms)])] if with_series else []
    metadata = [MetricMetadataMessage(type=t, metric_family_name=n, help=h, unit=u)
                .SerializeToString() for t, n, h, u in described]
    request = WriteRequest(timeseries=series, metadata=metadata)
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


async def test_types_help_and_units_come_from_the_protocols(
        api: Any, tenant: Any, container: Any, clock: FixedClock) -> None:
    now = clock.now()
    ms = int(now.timestamp() * 1000)
    key = {"Authorization": f"Bearer {tenant.api_key}"}
    otlp = await api.post("/v1/metrics", data=_otlp(ms * 1_000_000),
                          headers={"Content-Type": "application/x-protobuf", **key})
    assert otlp.status == 200, await otlp.text()
    # remote-write: samples, then (as Prometheus does) metadata in a request of its own,
    # then a newer description of the same family, and one entry that is not metadata
    for body in (_remote(ms, True), _remote(ms, False, (1, "http_requests_total", "old", "")),
                 _remote(ms, False, (1, "http_requests_total", "Requests served", ""),
                         (2, "", "nameless", ""))):
        answer = await api.post("/api/v1/write", data=body, headers={**REMOTE, **key})
        assert answer.status == 204, await answer.text()
    points = [{"name": n, "value": 1.0, "timestamp": now.isoformat()}
              for n in ("jobs_total", "free_bytes", "wait_bucket", "wait_sum", "wait_count")]
    ingest = await api.post("/api/ingest/metrics", json={"metrics": points},
                            headers=tenant.ingest_headers)
    assert ingest.status == 202
    await drain(container)

    meta = await (await api.get("/api/v1/metadata", headers=tenant.query_headers)).json()
    assert meta["status"] == "success"
    assert meta["data"] == {
        "orders": [{"type": "counter", "help": "Orders placed", "unit": "1"}],
        "queue_size": [{"type": "gauge", "help": "Jobs waiting", "unit": ""}],
        "temperature": [{"type": "gauge", "help": "Room temperature", "unit": "Cel"}],
        "latency": [{"type": "histogram", "help": "Request latency", "unit": "s"}],
        "http_requests_total": [{"type": "counter", "help": "Requests served", "unit": ""}],
        # nothing said: the names' conventions, else unknown
        "jobs_total": [{"type": "counter", "help": "", "unit": ""}],
        "wait": [{"type": "histogram", "help": "", "unit": ""}],
        "free_bytes": [{"type": "unknown", "help": "", "unit": ""}],
    }
    one = await (await api.get("/api/v1/metadata", params={"metric": "latency"},
                               headers=tenant.query_headers)).json()
    assert list(one["data"]) == ["latency"]
    two = await (await api.get("/api/v1/metadata", params={"limit": "2"},
                               headers=tenant.query_headers)).json()
    assert len(two["data"]) == 2


async def test_metadata_is_scoped_to_the_project(
        api: Any, tenant: Any, other_tenant: Any, container: Any, clock: FixedClock) -> None:
    ms = int(clock.now().timestamp() * 1000)
    answer = await api.post("/api/v1/write", data=_remote(ms, True, (5, "http_requests_total",
                                                                      "secret help", "")),
                            headers={**REMOTE, "Authorization": f"Bearer {tenant.api_key}"})
    assert answer.status == 204
    await drain(container)
    theirs = await (await api.get("/api/v1/metadata", headers=other_tenant.query_headers)).json()
    assert theirs["data"] == {}
    ours = await (await api.get("/api/v1/metadata", headers=tenant.query_headers)).json()
    assert ours["data"]["http_requests_total"][0]["type"] == "summary"


def test_metadata_rides_the_queue_message() -> None:
    described = (MetricMetadata("orders", MetricType.COUNTER, "Orders placed", "1"),)
    batch = MetricBatch("m", "p", datetime(2024, 1, 1, tzinfo=UTC), [], described)
    assert decode_batch(encode_batch(batch)) == batch
    bare = MetricBatch("n", "p", datetime(2024, 1, 1, tzinfo=UTC), [])
    assert b"metadata" not in encode_batch(bare)
    assert decode_batch(encode_batch(bare)) == bare
