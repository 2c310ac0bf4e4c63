"""OTLP/HTTP ingest on the in-process API (in-memory adapters, as `opspilot serve` runs).

The main proof is the real OpenTelemetry Python SDK (tests/otel_clients.py) exporting logs
through the `logging` handler and metrics (counter, gauge, histogram), in both OTLP
encodings; the data is then read back through the query endpoints. Bad input is sent as
OTLP messages built with opentelemetry-proto.
"""

from __future__ import annotations

import asyncio
import gzip
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
    Gauge,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Summary,
    SummaryDataPoint,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from opspilot.adapters.clock_and_ids import FixedClock
from opspilot.domain.ingest import Stream
from tests.otel_clients import (
    ENCODINGS,
    LATENCY_BOUNDS,
    assert_percentiles_in_their_buckets,
    expected_quantile,
    send_exponential,
    send_logs,
    send_metrics,
)
from tests.unit.conftest import drain

PROTOBUF = {"Content-Type": "application/x-protobuf"}


@pytest.fixture
def clock() -> FixedClock:
    # The SDK stamps records with the real time: the server's clock must be near it.
    return FixedClock(datetime.now(UTC))


def window(clock: FixedClock) -> str:
    start = (clock.now() - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    end = (clock.now() + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    return f"start_time={start}&end_time={end}"


async def series(api: Any, tenant: Any, clock: FixedClock, name: str, aggregation: str,
                 extra: str = "") -> list[dict[str, Any]]:
    response = await api.get(
        f"/api/metrics/query?metric_name={name}&aggregation={aggregation}&time_bucket=1d"
        f"&{window(clock)}{extra}", headers=tenant.query_headers)
    assert response.status == 200, await response.text()
    return list((await response.json())["points"])


@pytest.mark.parametrize("temporality", ["cumulative", "delta"])
@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_the_sdk_exports_metrics_that_the_queries_answer(
    api: Any, tenant: Any, container: Any, clock: FixedClock, encoding: str, temporality: str
) -> None:
    base = str(api.make_url("")).rstrip("/")
    sent = await asyncio.to_thread(send_metrics, base, tenant.api_key, encoding,
                                   temporality=temporality)
    await drain(container)
    tags = "&tags=route:/checkout"
    service = f"&service_name={sent.service}"
    [gauge] = await series(api, tenant, clock, sent.gauge, "max", service + tags)
    assert gauge["value"] == sent.gauge_value
    # stored as sent: running totals, or (delta) what each export added
    [counter] = await series(api, tenant, clock, sent.counter, "max", service)
    assert counter["value"] == max(sent.counter_values)
    [grown] = await series(api, tenant, clock, sent.counter, "increase", service)
    assert grown["value"] == sent.window_increase
    [rate] = await series(api, tenant, clock, sent.counter, "rate", service)
    assert rate["value"] == pytest.approx(sent.window_increase / 86_400)
    # Percentiles of the histogram's own name come from its buckets: cumulative, between
    # the two exports it observed 1..100 once each; delta, both exports count.
    bounds = [*LATENCY_BOUNDS]
    for aggregation, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        [point] = await series(api, tenant, clock, sent.histogram, aggregation, service)
        assert point["value"] == pytest.approx(expected_quantile(q, sent.observed, bounds))
        assert point["count"] == len(sent.observed)
    [p95] = await series(api, tenant, clock, sent.histogram, "p95")
    assert p95["value"] == pytest.approx(expected_quantile(0.95, sent.observed, bounds))
    if temporality == "delta":
        # the SDK's delta points are marked so; its gauge has no temporality
        store = container.metric_store()._points
        for name in (sent.counter, f"{sent.histogram}_bucket", f"{sent.histogram}_count"):
            assert {p.tags.get("__temporality__") for p in store[(tenant.project_id, name)]} == {
                "delta"}
        assert all("__temporality__" not in p.tags
                   for p in store[(tenant.project_id, sent.gauge)])


@pytest.mark.parametrize("temporality", ["cumulative", "delta"])
async def test_exponential_histogram_percentiles_across_a_change_of_scale(
    api: Any, tenant: Any, container: Any, clock: FixedClock, temporality: str
) -> None:
    """The SDK's exponential histogram, small values then large ones: the cumulative one
    lowers its scale and adds bounds, the delta exports cover disjoint ranges. Each
    percentile lies in the bucket (at the coarsest scale sent) of the observation at its
    rank, as it would with fixed bounds."""
    base = str(api.make_url("")).rstrip("/")
    sent = await asyncio.to_thread(send_exponential, base, tenant.api_key, "protobuf",
                                   temporality)
    await drain(container)
    if temporality == "cumulative":
        assert sent.scales[0] > sent.scales[1], sent.scales  # the layout did change
    await assert_percentiles_in_their_buckets(
        sent, lambda aggregation: series(api, tenant, clock, sent.histogram, aggregation,
                                         f"&service_name={sent.service}"))


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_the_sdk_exports_logs_that_the_queries_find(
    api: Any, tenant: Any, container: Any, clock: FixedClock, encoding: str
) -> None:
    base = str(api.make_url("")).rstrip("/")
    sent = await asyncio.to_thread(send_logs, base, tenant.api_key, encoding)
    await drain(container)
    response = await api.get(f"/api/logs/query?service_name={sent.service}&{window(clock)}",
                             headers=tenant.query_headers)
    logs = (await response.json())["logs"]
    assert {entry["message"]: entry["level"] for entry in logs} == sent.messages
    response = await api.get(f"/api/logs/query?trace_id={sent.trace_id}&{window(clock)}",
                             headers=tenant.query_headers)
    [traced] = (await response.json())["logs"]
    assert traced["level"] == "ERROR" and traced["service_name"] == sent.service
    assert traced["context"]["span_id"] == sent.span_id
    assert traced["context"]["order_id"] == 42
    assert traced["context"]["resource"]["deployment.environment"] == "test"


# -- hand-built OTLP messages: mapping details and bad input --------------------------------


def kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, str):
        return KeyValue(key=key, value=AnyValue(string_value=value))
    return KeyValue(key=key, value=AnyValue(int_value=value))


def now_ns(clock: FixedClock) -> int:
    return int(clock.now().timestamp() * 1e9)


def gauge_request(clock: FixedClock, points: list[NumberDataPoint],
                  name: str = "temperature") -> ExportMetricsServiceRequest:
    metric = Metric(name=name, gauge=Gauge(data_points=points))
    return ExportMetricsServiceRequest(resource_metrics=[ResourceMetrics(
        resource=Resource(attributes=[kv("service.name", "svc")]),
        scope_metrics=[ScopeMetrics(metrics=[metric])])])


def log_request(clock: FixedClock, bodies: list[str]) -> ExportLogsServiceRequest:
    records = [LogRecord(time_unix_nano=now_ns(clock), severity_number=17,
                         body=AnyValue(string_value=b)) for b in bodies]
    return ExportLogsServiceRequest(resource_logs=[ResourceLogs(
        resource=Resource(attributes=[kv("service.name", "svc")]),
        scope_logs=[ScopeLogs(log_records=records)])])


async def post(api: Any, path: str, message: Any, headers: dict[str, str]) -> Any:
    return await api.post(path, data=message.SerializeToString(), headers={**PROTOBUF, **headers})


async def test_partial_success_keeps_and_counts_the_good_records(
    api: Any, tenant: Any, container: Any, clock: FixedClock
) -> None:
    good = NumberDataPoint(time_unix_nano=now_ns(clock), as_double=1.5,
                           attributes=[kv("host", "a")])
    crowded = NumberDataPoint(time_unix_nano=now_ns(clock), as_double=2.5,
                              attributes=[kv(f"k{i}", "v") for i in range(33)])
    nul = NumberDataPoint(time_unix_nano=now_ns(clock), as_double=3.5,
                          attributes=[kv("host", "a\x00b")])
    response = await post(api, "/v1/metrics", gauge_request(clock, [good, crowded, nul]),
                          tenant.ingest_headers)
    assert response.status == 200
    answer = ExportMetricsServiceResponse.FromString(await response.read())
    assert answer.partial_success.rejected_data_points == 2
    message = answer.partial_success.error_message
    assert "resourceMetrics[0].scopeMetrics[0].metrics[0].gauge.dataPoints[1].attributes" in message
    assert "at most 32 tags" in message and "NUL" in message
    await drain(container)
    assert container.metric_store().count(tenant.project_id) == 1

    response = await post(api, "/v1/logs", log_request(clock, ["fine", "bad\x00line"]),
                          tenant.ingest_headers)
    answer_logs = ExportLogsServiceResponse.FromString(await response.read())
    assert answer_logs.partial_success.rejected_log_records == 1
    assert "logRecords[1].body" in answer_logs.partial_success.error_message


async def test_nothing_to_keep_is_a_400_naming_the_field(
    api: Any, tenant: Any, container: Any, clock: FixedClock
) -> None:
    old = NumberDataPoint(time_unix_nano=now_ns(clock) - 200 * 86_400 * 10**9, as_double=1.0)
    response = await post(api, "/v1/metrics", gauge_request(clock, [old]), tenant.ingest_headers)
    assert response.status == 400
    # a protobuf request's error is a protobuf google.rpc.Status (OTLP/HTTP spec)
    assert response.content_type == "application/x-protobuf"
    status = Status.FromString(await response.read())
    assert status.code == 3  # INVALID_ARGUMENT
    assert status.message.startswith(
        "resourceMetrics[0].scopeMetrics[0].metrics[0].gauge.dataPoints[0].timeUnixNano: ")
    assert "retention" in status.message
    bad_name = NumberDataPoint(time_unix_nano=now_ns(clock), as_double=1.0)
    doc = json_format.MessageToDict(gauge_request(clock, [bad_name], "bad name!"))
    response = await api.post("/v1/metrics", json=doc, headers=tenant.ingest_headers)
    assert response.status == 400  # a JSON request's error is the standard JSON error body
    assert (await response.json())["error"]["details"]["field"].endswith("metrics[0].name")
    assert await container.memory_queue().depth(Stream.METRICS) == 0


async def test_garbage_protobuf_is_a_400_status(api: Any, tenant: Any) -> None:
    response = await api.post("/v1/logs", data=b"\xff\xff\xff garbage",
                              headers={**PROTOBUF, **tenant.ingest_headers})
    assert response.status == 400
    status = Status.FromString(await response.read())
    assert status.code == 3 and status.message.startswith("body: not a protobuf")


@pytest.mark.parametrize(("body", "headers", "status", "field"), [
    (b"{not json", {"Content-Type": "application/json"}, 400, "body"),
    (b'{"resourceMetrics": 5}', {"Content-Type": "application/json"}, 400, "body"),
    (b"metrics", {"Content-Type": "text/plain"}, 415, "Content-Type"),
])
async def test_bad_bodies_are_refused_clearly(
    api: Any, tenant: Any, body: bytes, headers: dict[str, str], status: int, field: str
) -> None:
    response = await api.post("/v1/metrics", data=body, headers={**headers, **tenant.ingest_headers})
    assert response.status == status
    assert (await response.json())["error"]["details"]["field"] == field


async def test_oversize_is_413(api: Any, tenant: Any) -> None:
    response = await api.post("/v1/logs", data=b"\x00" * (10 * 1024 * 1024 + 1),
                              headers={**PROTOBUF, **tenant.ingest_headers})
    assert response.status == 413


async def test_gzip_json_hex_ids_and_bearer_key(
    api: Any, tenant: Any, container: Any, clock: FixedClock
) -> None:
    doc = {"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "gz"}}]},
        "scopeLogs": [{"scope": {"name": "lib", "version": "1.0"}, "logRecords": [{
            "timeUnixNano": str(now_ns(clock)), "severityText": "warning",
            "body": {"kvlistValue": {"values": [{"key": "event", "value": {"stringValue": "x"}}]}},
            "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
            "attributes": [{"key": "n", "value": {"intValue": "7"}}],
        }]}],
    }]}
    response = await api.post(
        "/otlp/v1/logs", data=gzip.compress(orjson.dumps(doc)),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip",
                 "Authorization": f"Bearer {tenant.api_key}"})
    assert response.status == 200, await response.text()
    assert await response.json() == {}
    await drain(container)
    found = await api.get(f"/api/logs/query?trace_id=5b8efff798038103d269b633813fc60c"
                          f"&{window(clock)}", headers=tenant.query_headers)
    [log] = (await found.json())["logs"]
    assert log["level"] == "WARN" and log["service_name"] == "gz"
    assert log["context"]["body"] == {"event": "x"} and log["context"]["n"] == 7
    assert log["context"]["span_id"] == "eee19b7ec3c1b174"
    assert log["context"]["scope"] == {"name": "lib", "version": "1.0"}


async def test_bad_hex_trace_id_names_the_field(api: Any, tenant: Any) -> None:
    doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "zz"}]}]}]}
    response = await api.post("/v1/logs", json=doc, headers=tenant.ingest_headers)
    assert response.status == 400
    assert (await response.json())["error"]["details"]["field"] == (
        "resourceLogs[0].scopeLogs[0].logRecords[0].traceId")


async def test_exponential_histograms_and_summaries_keep_the_prometheus_layout(
    api: Any, tenant: Any, container: Any, clock: FixedClock
) -> None:
    at = now_ns(clock)
    # scale 0: base 2, positive bucket i holds (2^i, 2^(i+1)]; offset 0 → (1,2], (2,4], (4,8]
    exp = ExponentialHistogramDataPoint(
        time_unix_nano=at, count=10, sum=40.0, scale=0, zero_count=1,
        positive=ExponentialHistogramDataPoint.Buckets(offset=0, bucket_counts=[2, 3, 4]))
    summary = SummaryDataPoint(time_unix_nano=at, count=4, sum=10.0, quantile_values=[
        SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=2.0),
        SummaryDataPoint.ValueAtQuantile(quantile=0.99, value=4.0)])
    request = ExportMetricsServiceRequest(resource_metrics=[ResourceMetrics(scope_metrics=[
        ScopeMetrics(metrics=[
            Metric(name="sizes", exponential_histogram=ExponentialHistogram(data_points=[exp])),
            Metric(name="rpc", summary=Summary(data_points=[summary])),
        ])])])
    response = await post(api, "/v1/metrics", request, tenant.ingest_headers)
    assert response.status == 200
    await drain(container)
    store = container.metric_store()
    buckets = {p.tags["le"]: p.value for p in store._points[(tenant.project_id, "sizes_bucket")]}
    assert buckets == {"0": 1.0, "2": 3.0, "4": 6.0, "8": 10.0, "+Inf": 10.0}
    quantiles = {p.tags["quantile"]: p.value for p in store._points[(tenant.project_id, "rpc")]}
    assert quantiles == {"0.5": 2.0, "0.99": 4.0}
    assert [p.value for p in store._points[(tenant.project_id, "rpc_count")]] == [4.0]


async def test_a_key_writes_only_its_own_project(
    api: Any, tenant: Any, other_tenant: Any, container: Any, clock: FixedClock
) -> None:
    point = NumberDataPoint(time_unix_nano=now_ns(clock), as_double=1.0)
    response = await post(api, "/v1/metrics", gauge_request(clock, [point]), tenant.ingest_headers)
    assert response.status == 200
    await drain(container)
    assert await series(api, tenant, clock, "temperature", "max")
    assert not await series(api, other_tenant, clock, "temperature", "max")
    response = await post(api, "/v1/metrics", gauge_request(clock, [point]), {})
    assert response.status == 401


def test_otlp_json_round_trip_names() -> None:
    """The response shape OTLP/JSON clients read: lowerCamelCase, int64 as strings."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsPartialSuccess

    answer = ExportLogsServiceResponse(partial_success=ExportLogsPartialSuccess(
        rejected_log_records=2, error_message="x"))
    assert orjson.loads(json_format.MessageToJson(answer)) == {
        "partialSuccess": {"rejectedLogRecords": "2", "errorMessage": "x"}}


async def test_a_full_queue_is_a_retryable_429_for_otlp_and_remote_write(
    api: Any, tenant: Any, container: Any, clock: FixedClock
) -> None:
    import cramjam

    from opspilot.entrypoints.api.remote_write.remote_write_pb2 import (
        Label,
        Sample,
        TimeSeries,
        WriteRequest,
    )

    container.memory_queue().max_depth = 1
    point = NumberDataPoint(time_unix_nano=now_ns(clock), as_double=1.0)
    first = await post(api, "/v1/metrics", gauge_request(clock, [point]), tenant.ingest_headers)
    second = await post(api, "/v1/metrics", gauge_request(clock, [point]), tenant.ingest_headers)
    assert (first.status, second.status) == (200, 429)
    assert int(second.headers["Retry-After"]) >= 1
    write = WriteRequest(timeseries=[TimeSeries(
        labels=[Label(name="__name__", value="up")],
        samples=[Sample(value=1.0, timestamp=int(clock.now().timestamp() * 1000))])])
    response = await api.post(
        "/api/v1/write", data=bytes(cramjam.snappy.compress_raw(write.SerializeToString())),
        headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
                 **tenant.ingest_headers})
    assert response.status == 429 and int(response.headers["Retry-After"]) >= 1


async def test_points_of_another_project_are_never_published(
    tenant: Any, other_tenant: Any, container: Any, clock: FixedClock
) -> None:
    """The OTLP mapper builds points for the key's project; the use case refuses a point
    of any other project, so no mapping can write across tenants."""
    from opspilot.domain.errors import ValidationError
    from opspilot.domain.metrics import MetricPoint
    from opspilot.domain.tenancy import IngestIdentity

    ingest = container.ingest()
    mine = MetricPoint(tenant.project_id, clock.now(), "x", 1.0)
    theirs = MetricPoint(other_tenant.project_id, clock.now(), "x", 2.0)
    with pytest.raises(ValidationError, match="API key's project"):
        await ingest.accept_points(IngestIdentity(tenant.project_id, "k"), [mine, theirs])
    assert await container.memory_queue().depth(Stream.METRICS) == 0
    accepted = await ingest.accept_points(IngestIdentity(tenant.project_id, "k"), [mine])
    assert accepted.accepted == 1 and await container.memory_queue().depth(Stream.METRICS) == 1
