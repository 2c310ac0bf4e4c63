"""The standard protocols with their real clients, end to end:

- the OpenTelemetry Python SDK (tests/otel_clients.py) exports logs and metrics over
  OTLP/HTTP, protobuf and JSON, to `opspilot api` + `opspilot worker` on the real services
  (PostgreSQL, RabbitMQ, OpenSearch) and to `opspilot serve` (in memory);
- a real Prometheus (/usr/bin/prometheus, the Debian package scripts/services installs),
  started here on its own port (21710) with its own config and data dir, scrapes a small
  target (21711) served by this test with prometheus_client, and remote_writes to
  OpsPilot; every sample Prometheus holds for the target's series (as its own HTTP API
  answers) is then found in OpsPilot with the same labels and value.

Skips without the services / the binary; fails instead under CI or OPSPILOT_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from tests.integration.test_pipeline_e2e import (  # noqa: F401  (`run` is a fixture)
    BIN,
    Proc,
    Project,
    Run,
    Stack,
    run,
    wait_for,
)
from tests.otel_clients import (
    ENCODINGS,
    LATENCY_BOUNDS,
    SECOND_LATENCIES,
    assert_percentiles_in_their_buckets,
    expected_quantile,
    send_exponential,
    send_logs,
    send_metrics,
)
from tests.services import services_required

pytestmark = pytest.mark.integration

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
HAVE_PROMETHEUS = Path(PROMETHEUS).exists()
# In the otlp session's port range (23300-23399), outside the shared services' 21000-21999.
PROM_PORT = 23310
TARGET_PORT = 23311
SERVE_PORT = 23312


@attrs.frozen
class Target:
    """An OpsPilot that takes data: its URL and a project's credentials."""

    url: str
    project: Project


def _embedded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OPSPILOT_")}


def _spawn(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(command, env=_embedded_env(), stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _create_project(url: str) -> Project:
    done = subprocess.run([str(BIN), "create-project", "standard", "--server", url, "--json"],
                          env=_embedded_env(), capture_output=True, text=True, timeout=60,
                          check=True)
    doc = orjson.loads(done.stdout.strip().splitlines()[-1])
    return Project(doc["project_id"], doc["api_key"], doc["token"])


async def start_serve(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Target]:
    url = f"http://127.0.0.1:{SERVE_PORT}"
    popen = _spawn([str(BIN), "serve", "--port", str(SERVE_PORT)], tmp_path / "serve.log")
    await Proc("serve", popen, tmp_path / "serve.log", f"{url}/healthz").wait_ready()
    return popen, Target(url, await asyncio.to_thread(_create_project, url))


@pytest.fixture(params=["serve", "api+worker"])
async def target(request: pytest.FixtureRequest, run: Run, tmp_path: Path  # noqa: F811
                 ) -> AsyncIterator[Target]:
    """`opspilot serve` (in memory), or `opspilot api` + `opspilot worker` on the real
    services with this test's own queue prefix (as test_pipeline_e2e's `stack`)."""
    if request.param == "serve":
        popen, target = await start_serve(tmp_path)
        try:
            yield target
        finally:
            popen.terminate()
            popen.wait(timeout=30)
        return
    prefix = f"std-{uuid.uuid4().hex[:10]}."
    made = Stack(run.urls, run.schema, run.index_prefix, prefix, run.cache_prefix, tmp_path)
    try:
        project = made.create_project(f"standard-clients-{prefix}")
        _, url = await made.start_api()
        await _start_worker(made)
        yield Target(url, project)
    finally:
        made.stop_all()
        from tests.contract.queue_fixtures import delete_queues

        with contextlib.suppress(Exception):
            await delete_queues(run.urls["amqp"], prefix)


async def _start_worker(made: Stack) -> None:
    """The worker, given three tries: on the shared 2-core machine under load, its 3-second
    broker connect timeout is sometimes too short (it exits, and is started again)."""
    for attempt in range(3):
        try:
            await made.start_worker()
            return
        except AssertionError:
            if attempt == 2:
                raise


async def get_json(url: str, headers: dict[str, str] | None = None) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as r:
        assert r.status == 200, f"{url}: {r.status} {await r.text()}"
        return await r.json()


def window() -> str:
    now = datetime.now(UTC)
    return (f"start_time={(now - timedelta(hours=1)).isoformat().replace('+00:00', 'Z')}"
            f"&end_time={(now + timedelta(minutes=5)).isoformat().replace('+00:00', 'Z')}")


async def points(target: Target, name: str, aggregation: str, bucket: str = "1d",
                 extra: str = "") -> list[dict[str, Any]]:
    doc = await get_json(
        f"{target.url}/api/metrics/query?metric_name={urllib.parse.quote(name)}"
        f"&aggregation={aggregation}&time_bucket={bucket}&{window()}{extra}",
        target.project.query_headers())
    return list(doc["points"])


# -- the OpenTelemetry SDK ---------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_the_otel_sdk_reaches_the_query_api(target: Target, encoding: str) -> None:
    sent_metrics = await asyncio.to_thread(send_metrics, target.url, target.project.api_key,
                                           encoding)
    sent_logs = await asyncio.to_thread(send_logs, target.url, target.project.api_key,
                                        encoding, "/otlp/v1/logs")
    service = f"&service_name={sent_metrics.service}"

    async def counter_total() -> bool:
        found = await points(target, sent_metrics.counter, "max", extra=service)
        return bool(found) and found[0]["value"] == sent_metrics.counter_total

    await wait_for(counter_total, 60, "the counter's cumulative value")
    [grown] = await points(target, sent_metrics.counter, "increase", extra=service)
    assert grown["value"] == sent_metrics.counter_increase
    [gauge] = await points(target, sent_metrics.gauge, "max", extra=service)
    assert gauge["value"] == sent_metrics.gauge_value

    async def p95() -> list[dict[str, Any]]:
        return await points(target, sent_metrics.histogram, "p95", extra=service)

    [quantile] = await wait_for(p95, 60, "the histogram's p95")
    assert quantile["value"] == pytest.approx(
        expected_quantile(0.95, SECOND_LATENCIES, LATENCY_BOUNDS))

    async def logs() -> list[dict[str, Any]]:
        doc = await get_json(
            f"{target.url}/api/logs/query?service_name={sent_logs.service}&{window()}",
            target.project.query_headers())
        return list(doc["logs"]) if len(doc["logs"]) == len(sent_logs.messages) else []

    found = await wait_for(logs, 60, "the SDK's log lines")
    assert {entry["message"]: entry["level"] for entry in found} == sent_logs.messages
    traced = await get_json(
        f"{target.url}/api/logs/query?trace_id={sent_logs.trace_id}&{window()}",
        target.project.query_headers())
    assert [entry["level"] for entry in traced["logs"]] == ["ERROR"]


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_the_otel_sdk_with_delta_temporality(target: Target, encoding: str) -> None:
    """The SDK configured for delta temporality (counters and histograms): `increase`,
    `rate` and the bucket percentiles read each export as a growth, in SQL and in memory."""
    sent = await asyncio.to_thread(send_metrics, target.url, target.project.api_key,
                                   encoding, temporality="delta")
    service = f"&service_name={sent.service}"

    async def both_exports() -> list[dict[str, Any]] | None:
        found = await points(target, f"{sent.histogram}_count", "count", extra=service)
        return found if found and found[0]["count"] == 2 else None

    await wait_for(both_exports, 60, "both delta exports")
    [counter] = await points(target, sent.counter, "max", extra=service)
    assert counter["value"] == max(sent.counter_values)  # stored as sent
    [grown] = await points(target, sent.counter, "increase", extra=service)
    assert grown["value"] == sent.window_increase == sent.counter_total
    [total] = await points(target, sent.counter, "sum", extra=service)
    assert total["value"] == sent.counter_total
    delta_only = "&tags=__temporality__:delta"
    [rate] = await points(target, sent.counter, "rate", extra=service + delta_only)
    assert rate["value"] == pytest.approx(sent.counter_total / 86_400)
    for aggregation, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        [quantile] = await points(target, sent.histogram, aggregation, extra=service)
        assert quantile["value"] == pytest.approx(
            expected_quantile(q, sent.observed, LATENCY_BOUNDS))
        assert quantile["count"] == len(sent.observed)


@pytest.mark.parametrize("temporality", ["cumulative", "delta"])
async def test_exponential_histograms_across_a_change_of_scale(target: Target,
                                                               temporality: str) -> None:
    """The SDK's exponential histogram whose range grows 200-fold between exports (a lower
    scale and new bounds; delta: disjoint ranges): each percentile lies in the bucket of
    the observation at its rank, in SQL and in memory."""
    sent = await asyncio.to_thread(send_exponential, target.url, target.project.api_key,
                                   "protobuf", temporality)
    service = f"&service_name={sent.service}"

    async def all_exports() -> bool:
        found = await points(target, f"{sent.histogram}_count", "count", extra=service)
        return bool(found) and found[0]["count"] == len(sent.scales)

    await wait_for(all_exports, 60, "the exponential histogram's exports")
    await assert_percentiles_in_their_buckets(
        sent, lambda aggregation: points(target, sent.histogram, aggregation, extra=service))


async def test_bad_input_is_refused_clearly_and_good_records_are_kept(target: Target) -> None:
    """On the real pipeline: a partially bad export keeps and counts its good records
    (NUL bytes, too many attributes refused by name); garbage protobuf, a wrong content
    type and an oversize body are clear 4xx."""
    from google.rpc.status_pb2 import Status
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
        ExportMetricsServiceResponse,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.metrics.v1.metrics_pb2 import (
        Gauge,
        Metric,
        NumberDataPoint,
        ResourceMetrics,
        ScopeMetrics,
    )
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    def kv(key: str, value: str) -> KeyValue:
        return KeyValue(key=key, value=AnyValue(string_value=value))

    at = time.time_ns()
    name = f"bad_input_{uuid.uuid4().hex[:6]}"
    request = ExportMetricsServiceRequest(resource_metrics=[ResourceMetrics(
        resource=Resource(attributes=[kv("service.name", "bad-input")]),
        scope_metrics=[ScopeMetrics(metrics=[Metric(name=name, gauge=Gauge(data_points=[
            NumberDataPoint(time_unix_nano=at, as_double=7.0, attributes=[kv("ok", "yes")]),
            NumberDataPoint(time_unix_nano=at, as_double=8.0, attributes=[kv("host", "a\x00b")]),
            NumberDataPoint(time_unix_nano=at, as_double=9.0,
                            attributes=[kv(f"k{i}", "v") for i in range(33)]),
        ]))])])])
    protobuf = {"Content-Type": "application/x-protobuf", "X-API-Key": target.project.api_key}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{target.url}/v1/metrics", data=request.SerializeToString(),
                                headers=protobuf) as r:
            assert r.status == 200
            answer = ExportMetricsServiceResponse.FromString(await r.read())
        assert answer.partial_success.rejected_data_points == 2
        assert "dataPoints[1].attributes.host" in answer.partial_success.error_message
        assert "dataPoints[2].attributes: at most 32 tags" in answer.partial_success.error_message
        async with session.post(f"{target.url}/v1/logs", data=b"\xff\xfe garbage",
                                headers=protobuf) as r:
            assert r.status == 400
            status = Status.FromString(await r.read())
            assert status.code == 3 and status.message.startswith("body: not a protobuf")
        async with session.post(f"{target.url}/v1/metrics", data=b"x",
                                headers={**protobuf, "Content-Type": "text/plain"}) as r:
            assert r.status == 415
            assert (await r.json())["error"]["details"]["field"] == "Content-Type"
        async with session.post(f"{target.url}/v1/logs", data=b"\x00" * (10 * 1024 * 1024 + 1),
                                headers=protobuf) as r:
            assert r.status == 413
            assert Status.FromString(await r.read()).code == 8  # RESOURCE_EXHAUSTED

    async def kept() -> list[dict[str, Any]]:
        return await points(target, name, "count", extra="&service_name=bad-input")

    [found] = await wait_for(kept, 60, "the good data point")
    assert found["count"] == 1
    [value] = await points(target, name, "max", extra="&tags=ok:yes")
    assert value["value"] == 7.0


# -- a real Prometheus -------------------------------------------------------------------


def prometheus_config(path: Path, target: Target) -> None:
    path.write_text(f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: shop
    static_configs:
      - targets: ["127.0.0.1:{TARGET_PORT}"]
        labels: {{env: test}}
remote_write:
  - url: {target.url}/api/v1/write
    authorization:
      credentials: {target.project.api_key}
    queue_config:
      batch_send_deadline: 1s
      min_backoff: 100ms
      max_backoff: 1s
""")


async def scrape_target(registry: CollectorRegistry) -> web.AppRunner:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry),
                            content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", TARGET_PORT).start()
    return runner


async def prometheus_samples(query: str) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
    """Raw samples of a range selector, as Prometheus' own HTTP API answers them."""
    doc = await get_json(f"http://127.0.0.1:{PROM_PORT}/api/v1/query?"
                         + urllib.parse.urlencode({"query": query}))
    return [(r["metric"], [(float(t), float(v)) for t, v in r["values"]])
            for r in doc["data"]["result"]]


async def test_prometheus_remote_write_matches_what_prometheus_answers(
    target: Target, tmp_path: Path
) -> None:
    if not HAVE_PROMETHEUS:
        if services_required():
            pytest.fail(f"{PROMETHEUS} is missing (scripts/services installs it)")
        pytest.skip(f"{PROMETHEUS} is missing")
    registry = CollectorRegistry()
    orders = Counter("shop_orders", "orders", ["method"], registry=registry)
    temperature = Gauge("shop_temperature", "temperature", registry=registry)
    latency = Histogram("shop_latency_seconds", "latency", buckets=[0.1, 0.5, 1.0],
                        registry=registry)
    runner = await scrape_target(registry)
    config = tmp_path / "prometheus.yml"
    prometheus_config(config, target)
    prom = _spawn([PROMETHEUS, f"--config.file={config}",
                   f"--storage.tsdb.path={tmp_path / 'data'}",
                   f"--web.listen-address=127.0.0.1:{PROM_PORT}"], tmp_path / "prometheus.log")
    try:
        deadline = time.monotonic() + 12
        step = 0
        while time.monotonic() < deadline:
            step += 1
            orders.labels("GET").inc(step)
            orders.labels("POST").inc()
            temperature.set(20 + step / 4)
            latency.observe(0.05 * (step % 25))
            await asyncio.sleep(0.25)
        await compare_with_prometheus(target, tmp_path)
    finally:
        prom.terminate()
        prom.wait(timeout=30)
        await runner.cleanup()


async def compare_with_prometheus(target: Target, tmp_path: Path) -> None:
    compared = 0
    for name in ("shop_orders_total", "shop_temperature", "shop_latency_seconds_bucket",
                 "shop_latency_seconds_count", "up"):
        for labels, samples in await prometheus_samples(f'{name}{{job="shop"}}[1m]'):
            assert labels.pop("__name__") == name
            assert labels["job"] == "shop" and labels["env"] == "test"
            tags = ",".join(f"{k}:{v}" for k, v in sorted(labels.items()))
            extra = f"&service_name=shop&tags={urllib.parse.quote(tags)}"

            async def stored(name: str = name, extra: str = extra) -> dict[float, float] | None:
                found = await points(target, name, "max", "1s", extra)
                got = {datetime.fromisoformat(p["timestamp"]).timestamp(): p["value"]
                       for p in found}
                # remote_write lags: compare what both hold, and at least 5 samples
                return got if len(got) >= 5 else None

            got = await wait_for(stored, 60, f"{name}{labels} in OpsPilot")
            last = max(got)
            wanted = {float(int(t)): v for t, v in samples if int(t) <= last}
            assert len(wanted) >= 5, (name, labels, samples, got)
            assert {t: got.get(t) for t in wanted} == wanted, (name, labels)
            compared += len(wanted)
    assert compared >= 50
    # the histogram's own name answers percentiles from its buckets
    [p99] = await points(target, "shop_latency_seconds", "p99", "1d",
                         "&service_name=shop")
    assert 0.5 < p99["value"] <= 1.0  # observations run 0..1.2 s: the rank is in (0.5, 1]
