"""Real protocol messages for fuzzing the protocol doors' protobuf bodies (the unit fuzzing,
tests/unit/api/test_openapi_fuzz.py, and the live one's schemathesis hooks)."""

from __future__ import annotations

from datetime import datetime


def protobuf_bodies(at_time: datetime) -> list[bytes]:
    """Real protocol messages (opentelemetry-proto; the remote-write types, snappy-framed)
    for the protobuf bodies the fuzzer sends, besides random bytes: an empty export,
    one gauge point, one log record, a remote-write sample."""
    import cramjam
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
    )
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
    from opentelemetry.proto.metrics.v1.metrics_pb2 import (
        Gauge,
        Metric,
        NumberDataPoint,
        ResourceMetrics,
        ScopeMetrics,
    )

    from opspilot.entrypoints.api.remote_write.remote_write_pb2 import (
        Label,
        Sample,
        TimeSeries,
        WriteRequest,
    )

    at = int(at_time.timestamp() * 1e9)
    metrics = ExportMetricsServiceRequest(resource_metrics=[ResourceMetrics(scope_metrics=[
        ScopeMetrics(metrics=[Metric(name="fuzz", gauge=Gauge(data_points=[
            NumberDataPoint(time_unix_nano=at, as_double=1.0)]))])])])
    logs = ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(
        log_records=[LogRecord(time_unix_nano=at, severity_number=9)])])])
    write = WriteRequest(timeseries=[TimeSeries(labels=[Label(name="__name__", value="up")],
                                                samples=[Sample(value=1.0, timestamp=at // 10**6)])])
    return [b"", metrics.SerializeToString(), logs.SerializeToString(),
            bytes(cramjam.snappy.compress_raw(write.SerializeToString()))]
