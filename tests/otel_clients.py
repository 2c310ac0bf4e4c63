"""The real OpenTelemetry Python SDK as a client: logs through the `logging` handler and
metrics (counter, gauge, histogram) exported over OTLP/HTTP, protobuf or JSON, to an
OpsPilot at `base_url`. Shared by the unit tests (in-process API) and the integration
tests (`opspilot api` + `opspilot worker` on the real services).

The SDK's exporters are synchronous (requests); call these from a thread when the server
runs on the caller's event loop.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

ENCODINGS = ("protobuf", "json")
# The values each export carries, so the tests know what the queries must answer.
FIRST_LATENCIES = [3.0, 7.0, 12.0]
SECOND_LATENCIES = [float(v) for v in range(1, 101)]  # 1..100 ms, one each
LATENCY_BOUNDS = [0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0]


def _exporters(encoding: str) -> tuple[Any, Any]:
    if encoding == "protobuf":
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    else:
        from opentelemetry.exporter.otlp.json.http._log_exporter import (  # type: ignore[no-redef]
            OTLPLogExporter,
        )
        from opentelemetry.exporter.otlp.json.http.metric_exporter import (  # type: ignore[no-redef]
            OTLPMetricExporter,
        )
    return OTLPLogExporter, OTLPMetricExporter


@attrs.frozen
class SentLogs:
    service: str
    trace_id: str  # hex, as the query API shows it
    span_id: str
    messages: dict[str, str]  # message → level OpsPilot should show


def send_logs(base_url: str, api_key: str, encoding: str, path: str = "/v1/logs") -> SentLogs:
    """Logs through `logging` → LoggingHandler → BatchLogRecordProcessor → OTLP exporter,
    one of them inside a span so that it carries a trace id."""
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    exporter_type, _ = _exporters(encoding)
    service = f"otel-logs-{encoding}-{uuid.uuid4().hex[:6]}"
    resource = Resource.create({"service.name": service, "deployment.environment": "test"})
    provider = LoggerProvider(resource=resource)
    exporter = exporter_type(endpoint=base_url + path, headers={"x-api-key": api_key})
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    handler = LoggingHandler(level=logging.DEBUG, logger_provider=provider)
    logger = logging.getLogger(f"opspilot.test.{service}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    tracer = TracerProvider(resource=resource).get_tracer("test")
    try:
        logger.info("otel info line %s", service)
        logger.warning("otel warning line %s", service)
        with tracer.start_as_current_span("checkout") as span:
            logger.error("otel error line in a span %s", service, extra={"order_id": 42})
            context = span.get_span_context()
        assert provider.force_flush(30_000), "the log exporter did not flush"
    finally:
        logger.removeHandler(handler)
        provider.shutdown()
    return SentLogs(
        service, format(context.trace_id, "032x"), format(context.span_id, "016x"),
        {f"otel info line {service}": "INFO", f"otel warning line {service}": "WARN",
         f"otel error line in a span {service}": "ERROR"},
    )


@attrs.frozen
class SentMetrics:
    service: str
    counter: str
    gauge: str
    histogram: str
    counter_total: float  # the cumulative value after both exports
    counter_increase: float  # between the two exports
    gauge_value: float
    temporality: str = "cumulative"

    @property
    def counter_values(self) -> list[float]:
        """What each export carried for the counter: running totals, or (delta) what it
        grew by since the previous export."""
        return [5.0, 3.0] if self.temporality == "delta" else [5.0, 8.0]

    @property
    def window_increase(self) -> float:
        """`increase` over a window holding both exports: a cumulative series' first
        sample adds nothing (it grows from nothing known), a delta series' first sample
        is a growth of its own."""
        return self.counter_total if self.temporality == "delta" else self.counter_increase

    @property
    def observed(self) -> list[float]:
        """The histogram observations its percentiles over both exports cover."""
        if self.temporality == "delta":
            return [*FIRST_LATENCIES, *SECOND_LATENCIES]
        return list(SECOND_LATENCIES)


def send_metrics(base_url: str, api_key: str, encoding: str,
                 path: str = "/v1/metrics", temporality: str = "cumulative") -> SentMetrics:
    """Two collections: a counter, a synchronous gauge and a histogram with explicit
    bounds; the second export adds SECOND_LATENCIES to the histogram and 3 to the counter.
    Cumulative temporality is the SDK's default for OTLP; `temporality="delta"` configures
    the exporter as OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta does (counters
    and histograms delta, up-down counters cumulative)."""
    from opentelemetry.sdk.metrics import (
        Counter,
        Histogram,
        MeterProvider,
        ObservableCounter,
        ObservableGauge,
        ObservableUpDownCounter,
        UpDownCounter,
    )
    from opentelemetry.sdk.metrics.export import (
        AggregationTemporality,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
    from opentelemetry.sdk.resources import Resource

    _, exporter_type = _exporters(encoding)
    tag = uuid.uuid4().hex[:6]
    service = f"otel-metrics-{encoding}-{tag}"
    names = SentMetrics(service, f"otel_requests_{tag}", f"otel_temperature_{tag}",
                        f"otel_latency_{tag}", 8.0, 3.0, 21.5, temporality)
    delta, cumulative = AggregationTemporality.DELTA, AggregationTemporality.CUMULATIVE
    preferred = {Counter: delta, Histogram: delta, ObservableCounter: delta,
                 UpDownCounter: cumulative, ObservableUpDownCounter: cumulative,
                 ObservableGauge: cumulative} if temporality == "delta" else None
    exporter = exporter_type(endpoint=base_url + path, headers={"x-api-key": api_key},
                             preferred_temporality=preferred)
    # A long interval: the test decides when to collect (force_flush).
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    view = View(instrument_name=names.histogram,
                aggregation=ExplicitBucketHistogramAggregation(LATENCY_BOUNDS))
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create(
        {"service.name": service}), views=[view])
    meter = provider.get_meter("opspilot.test")
    counter = meter.create_counter(names.counter)
    gauge = meter.create_gauge(names.gauge)
    histogram = meter.create_histogram(names.histogram, unit="ms")
    attributes = {"route": "/checkout"}
    try:
        counter.add(5, attributes)
        gauge.set(19.0, attributes)
        for value in FIRST_LATENCIES:
            histogram.record(value, attributes)
        assert provider.force_flush(30_000), "the first metric export failed"
        counter.add(3, attributes)
        gauge.set(names.gauge_value, attributes)
        for value in SECOND_LATENCIES:
            histogram.record(value, attributes)
        assert provider.force_flush(30_000), "the second metric export failed"
    finally:
        provider.shutdown()
    return names


# An exponential histogram's two exports: small values, then large ones (the range grows
# ~200-fold, so a cumulative histogram lowers its scale and adds bounds at the top).
SMALL_LATENCIES = [float(v) for v in range(1, 11)]
LARGE_LATENCIES = [float(v) for v in range(1000, 2001, 20)]


@attrs.frozen
class SentExponential:
    service: str
    histogram: str
    scales: tuple[int, ...]  # each export's scale, as the SDK sent it
    temporality: str

    @property
    def observed(self) -> list[float]:
        """The observations the percentiles over both exports cover (cumulative: the
        first export is where the series starts, so the window holds the second's)."""
        if self.temporality == "delta":
            return [*SMALL_LATENCIES, *LARGE_LATENCIES]
        return list(LARGE_LATENCIES)


def send_exponential(base_url: str, api_key: str, encoding: str,
                     temporality: str = "cumulative") -> SentExponential:
    """A histogram aggregated as a base-2 exponential histogram (what
    OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION=base2_exponential_bucket_histogram
    selects), exported twice: SMALL_LATENCIES, then LARGE_LATENCIES."""
    from opentelemetry.sdk.metrics import Histogram, MeterProvider
    from opentelemetry.sdk.metrics.export import (
        AggregationTemporality,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
    from opentelemetry.sdk.resources import Resource

    _, exporter_type = _exporters(encoding)
    scales: list[int] = []

    class Recording(exporter_type):  # type: ignore[misc,valid-type]
        """The exporter, noting the scale of each point it sends."""

        def export(self, metrics_data: Any, *args: Any, **kwargs: Any) -> Any:
            for resource in metrics_data.resource_metrics:
                for scope in resource.scope_metrics:
                    scales.extend(p.scale for m in scope.metrics for p in m.data.data_points)
            return super().export(metrics_data, *args, **kwargs)

    tag = uuid.uuid4().hex[:6]
    service, name = f"otel-exp-{encoding}-{tag}", f"otel_exp_latency_{tag}"
    preferred = ({Histogram: AggregationTemporality.DELTA} if temporality == "delta"
                 else None)
    exporter = Recording(endpoint=f"{base_url}/v1/metrics", headers={"x-api-key": api_key},
                         preferred_temporality=preferred)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    view = View(instrument_name=name, aggregation=ExponentialBucketHistogramAggregation())
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create(
        {"service.name": service}), views=[view])
    histogram = provider.get_meter("opspilot.test").create_histogram(name, unit="ms")
    try:
        for batch in (SMALL_LATENCIES, LARGE_LATENCIES):
            for value in batch:
                histogram.record(value, {"route": "/search"})
            assert provider.force_flush(30_000), "a metric export failed"
    finally:
        provider.shutdown()
    return SentExponential(service, name, tuple(scales), temporality)


def exponential_bucket(value: float, scale: int) -> tuple[float, float]:
    """The (lower, upper] bucket of an exponential histogram at `scale` that holds a
    positive `value`, computed by the definition (base = 2^(2^-scale))."""
    base = 2.0 ** (2.0 ** -scale)
    index = math.ceil(math.log(value, base)) - 1
    while base ** (index + 1) < value:  # guard the logarithm's rounding
        index += 1
    while base ** index >= value:
        index -= 1
    return base ** index, base ** (index + 1)


async def assert_percentiles_in_their_buckets(
        sent: SentExponential,
        query: Callable[[str], Awaitable[list[dict[str, Any]]]]) -> None:
    """p50/p90/p95/p99 (one point each over both exports) each inside the bucket, at the
    coarsest scale the SDK sent, of the observation at its rank; the count is all of the
    window's observations."""
    observed = sorted(sent.observed)
    for aggregation, q in (("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)):
        [point] = await query(aggregation)
        at_rank = observed[math.ceil(q * len(observed)) - 1]
        lower, upper = exponential_bucket(at_rank, min(sent.scales))
        assert lower * (1 - 1e-12) <= point["value"] <= upper * (1 + 1e-12), (
            aggregation, point, at_rank, (lower, upper), sent.scales)
        assert point["count"] == len(observed)


def expected_quantile(q: float, values: list[float], bounds: list[float]) -> float:
    """What Prometheus' histogram_quantile answers for `values` observed into `bounds`
    (linear interpolation inside the bucket that holds the rank)."""
    counts = [sum(1 for v in values if v <= b) for b in bounds]
    rank = q * len(values)
    for i, (bound, cumulative) in enumerate(zip(bounds, counts, strict=True)):
        if cumulative >= rank:
            lower = 0.0 if i == 0 else bounds[i - 1]
            before = 0 if i == 0 else counts[i - 1]
            if i == 0 and bound <= 0:
                return bound
            return lower + (bound - lower) * (rank - before) / (cumulative - before)
    return bounds[-1]
