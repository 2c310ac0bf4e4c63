"""OTLP/HTTP protobuf ingest against the JSON path, in the same run, on the same stack:
HTTP client → `opspilot api` → RabbitMQ → `opspilot worker` → PostgreSQL / OpenSearch.

    eval "$(scripts/services env)"
    .venv/bin/python bench/otlp_ingest.py --points 50000 --logs 20000 --clients 4 --rounds 3

The same points (10 metric names × 5 services × 20 hosts, one value each) and log lines
(5 services, 4 levels, trace ids) are sent, 1,000 per request, as JSON to
`/api/ingest/{metrics,logs}` and as OTLP protobuf (opentelemetry-proto messages, gauges
grouped by service and name as an SDK groups them) to `/v1/{metrics,logs}`, each run into
its own project. `--rounds` runs both paths that many times, alternating which goes first,
so that the shared machine's changing load weighs on both alike; the table gives each
path's median and the median of the rounds' OTLP/JSON ratios. Measured per path:
- API accepted: records / wall time of all the requests (202 / 200);
- end to end: records / time from the first request until every record is visible (count
  of the project's rows in PostgreSQL, or OpenSearch's `_count` for the project);
- decode CPU: in this process, the CPU time (process_time) to turn one request body into
  what the use case publishes, per 1,000 records, median of 40 interleaved pairs: for
  metrics, orjson + pydantic + the use case's MetricPoints vs protobuf parse + the OTLP
  mapper (which builds the MetricPoints itself); for logs, orjson + pydantic vs parse +
  mapping (the use case's LogRecords cost both paths the same).
Rate limits off; the schema, indices and queues are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import BATCH, LEVELS, batched, cleanup  # noqa: E402
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (  # noqa: E402
    ExportLogsServiceRequest,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (  # noqa: E402
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue  # noqa: E402
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs  # noqa: E402
from opentelemetry.proto.metrics.v1.metrics_pb2 import (  # noqa: E402
    Gauge,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource  # noqa: E402
from tests.integration.test_pipeline_e2e import BIN, Stack  # noqa: E402

from opspilot.adapters.opensearch import mapping  # noqa: E402
from opspilot.adapters.opensearch.store import connect_opensearch  # noqa: E402
from opspilot.adapters.postgres.database import asyncpg_dsn  # noqa: E402
from opspilot.application.ingest import TimeCheck  # noqa: E402
from opspilot.domain.metrics import MetricPoint  # noqa: E402
from opspilot.entrypoints.api.otlp.logs import map_logs  # noqa: E402
from opspilot.entrypoints.api.otlp.metrics import map_metrics  # noqa: E402
from opspilot.entrypoints.api.schemas import LogsIngestBody, MetricsIngestBody  # noqa: E402

SEVERITY = {"DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17}


def point(i: int, base: datetime) -> dict[str, Any]:
    return {"name": f"bench_m{i % 10}", "service": f"svc-{i % 5}", "value": float(i),
            "timestamp": base + timedelta(milliseconds=i), "host": f"h{i % 20}"}


def log(i: int, base: datetime) -> dict[str, Any]:
    return {"level": LEVELS[i % len(LEVELS)], "service": f"svc-{i % 5}",
            "message": f"request {i} handled by worker {i % 7} in {i % 900} ms status=200",
            "timestamp": base + timedelta(milliseconds=i * 10),
            "trace_id": f"{i // 10:032x}"}


def json_metrics(chunk: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"metrics": [
        {"name": p["name"], "service": p["service"], "value": p["value"],
         "timestamp": p["timestamp"].isoformat(), "tags": {"host": p["host"]}} for p in chunk]})


def json_logs(chunk: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"logs": [{**x, "timestamp": x["timestamp"].isoformat()} for x in chunk]})


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000) * 1000


def otlp_metrics(chunk: list[dict[str, Any]]) -> bytes:
    by_service: dict[str, dict[str, list[NumberDataPoint]]] = {}
    for p in chunk:
        by_service.setdefault(p["service"], {}).setdefault(p["name"], []).append(NumberDataPoint(
            time_unix_nano=_ns(p["timestamp"]), as_double=p["value"],
            attributes=[KeyValue(key="host", value=AnyValue(string_value=p["host"]))]))
    request = ExportMetricsServiceRequest(resource_metrics=[
        ResourceMetrics(
            resource=Resource(attributes=[KeyValue(key="service.name",
                                                   value=AnyValue(string_value=service))]),
            scope_metrics=[ScopeMetrics(metrics=[
                Metric(name=name, gauge=Gauge(data_points=points))
                for name, points in names.items()])])
        for service, names in by_service.items()])
    return request.SerializeToString()


def otlp_logs(chunk: list[dict[str, Any]]) -> bytes:
    by_service: dict[str, list[LogRecord]] = {}
    for x in chunk:
        by_service.setdefault(x["service"], []).append(LogRecord(
            time_unix_nano=_ns(x["timestamp"]), severity_number=SEVERITY[x["level"]],
            severity_text=x["level"], body=AnyValue(string_value=x["message"]),
            trace_id=bytes.fromhex(x["trace_id"])))
    request = ExportLogsServiceRequest(resource_logs=[
        ResourceLogs(resource=Resource(attributes=[
            KeyValue(key="service.name", value=AnyValue(string_value=service))]),
            scope_logs=[ScopeLogs(log_records=records)])
        for service, records in by_service.items()])
    return request.SerializeToString()


async def post_all(url: str, key: str, content_type: str, bodies: list[bytes],
                   clients: int) -> float:
    """Seconds until every body was accepted (202/200), retrying 429/503."""
    todo = iter(bodies)
    headers = {"X-API-Key": key, "Content-Type": content_type}

    async def client(session: aiohttp.ClientSession) -> None:
        for body in todo:
            while True:
                async with session.post(url, data=body, headers=headers) as r:
                    text = await r.read()
                    if r.status in (200, 202):
                        if r.status == 200 and text and b"partialSuccess" in text:
                            raise SystemExit(f"{url}: partial success: {text[:300]!r}")
                        break
                    if r.status not in (429, 503):
                        raise SystemExit(f"{url}: HTTP {r.status} {text[:300]!r}")
                    await asyncio.sleep(float(r.headers.get("Retry-After", "1")))

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return time.perf_counter() - started


async def run_path(url: str, key: str, content_type: str, bodies: list[bytes], clients: int,
                   expected: int, count: Any) -> dict[str, float]:
    started = time.perf_counter()
    accepted_s = await post_all(url, key, content_type, bodies, clients)
    deadline = time.perf_counter() + 600
    while await count() < expected:
        if time.perf_counter() > deadline:
            raise SystemExit(f"{url}: {await count()} of {expected} visible after 600 s")
        await asyncio.sleep(0.1)
    visible_s = time.perf_counter() - started
    return {"accept_rate": expected / accepted_s, "rate": expected / visible_s}


def decode_cpu(json_body: bytes, model: Any, otlp_body: bytes, request_type: Any,
               mapper: Any, kind: str) -> tuple[float, float]:
    """Median CPU ms per 1,000 records: JSON body → what the use case publishes from it;
    protobuf → the OTLP mapper's records."""
    check = TimeCheck(datetime.now(UTC), None, kind)
    project = "bench"

    def json_once() -> None:
        body = model.model_validate(orjson.loads(json_body))
        if kind == "metrics":  # as IngestService.accept_metrics builds them
            [MetricPoint(project, m.timestamp, m.name, float(m.value), m.service, m.tags)
             for m in body.metrics]

    def otlp_once() -> None:
        message = request_type()
        message.ParseFromString(otlp_body)
        mapper(message, check, project) if kind == "metrics" else mapper(message, check)

    # Interleaved, so that the machine's load (shared, 2 cores) weighs on both alike.
    runs: tuple[list[float], list[float]] = ([], [])
    for _ in range(40):
        for fn, found in ((json_once, runs[0]), (otlp_once, runs[1])):
            t = time.process_time()
            fn()
            found.append((time.process_time() - t) * 1000)
    return statistics.median(runs[0]), statistics.median(runs[1])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--logs", type=int, default=50_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    urls = {"database": os.environ.get("OPSPILOT_DATABASE_URL", ""),
            "amqp": os.environ.get("OPSPILOT_AMQP_URL", ""),
            "opensearch": os.environ.get("OPSPILOT_OPENSEARCH_URL", "")}
    if not all(urls.values()):
        raise SystemExit('set the services\' URLs: eval "$(scripts/services env)"')
    tag = uuid.uuid4().hex[:8]
    stack = Stack(urls, f"bench_{tag}", f"bench-{tag}-", f"bench-{tag}.", f"bench:{tag}:",
                  Path(tempfile.mkdtemp(prefix="otlp-bench-")),
                  extra_env={"OPSPILOT_RATE_LIMITS_ENABLED": "false"})
    dsn = asyncpg_dsn(urls["database"])
    await asyncio.to_thread(subprocess.run, [str(BIN), "migrate"], env=stack.env(), check=True,
                            capture_output=True, timeout=300)
    now = datetime.now(UTC)
    points = [point(i, now - timedelta(hours=2)) for i in range(args.points)]
    logs = [log(i, now - timedelta(hours=1)) for i in range(args.logs)]
    chunks, log_chunks = batched(points), batched(logs)
    bodies = {
        ("metrics", "json"): [json_metrics(c) for c in chunks],
        ("metrics", "otlp"): [otlp_metrics(c) for c in chunks],
        ("logs", "json"): [json_logs(c) for c in log_chunks],
        ("logs", "otlp"): [otlp_logs(c) for c in log_chunks],
    }
    cpu_metrics = decode_cpu(bodies[("metrics", "json")][0], MetricsIngestBody,
                             bodies[("metrics", "otlp")][0], ExportMetricsServiceRequest,
                             map_metrics, "metrics")
    cpu_logs = decode_cpu(bodies[("logs", "json")][0], LogsIngestBody,
                          bodies[("logs", "otlp")][0], ExportLogsServiceRequest, map_logs, "logs")
    results: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
    try:
        _, base = await stack.start_api()
        await stack.start_worker()
        conn = await asyncpg.connect(dsn)
        search = await connect_opensearch(urls["opensearch"])
        paths = {("metrics", "json"): "/api/ingest/metrics", ("metrics", "otlp"): "/v1/metrics",
                 ("logs", "json"): "/api/ingest/logs", ("logs", "otlp"): "/v1/logs"}
        for round_ in range(args.rounds):
            for kind in ("metrics", "logs"):
                order = ("json", "otlp") if round_ % 2 == 0 else ("otlp", "json")
                for encoding in order:
                    project = stack.create_project(f"bench-{kind}-{encoding}-{round_}")

                    async def count(kind: str = kind, project_id: str = project.project_id
                                    ) -> int:
                        if kind == "metrics":
                            return int(await conn.fetchval(
                                f'SELECT count(*) FROM "{stack.schema}".metrics'
                                " WHERE project_id = $1", project_id))
                        doc = await search.count(
                            index=mapping.index_pattern(stack.index_prefix),
                            body={"query": {"term": {"project_id": project_id}}},
                            allow_no_indices=True)
                        return int(doc["count"])

                    content_type = ("application/json" if encoding == "json"
                                    else "application/x-protobuf")
                    expected = args.points if kind == "metrics" else args.logs
                    found = await run_path(
                        base + paths[(kind, encoding)], project.api_key, content_type,
                        bodies[(kind, encoding)], args.clients, expected, count)
                    results[(kind, encoding)].append(found)
                    print(f"round {round_ + 1} {kind} {encoding}: accepted"
                          f" {found['accept_rate']:,.0f}/s, visible {found['rate']:,.0f}/s",
                          flush=True)
        await conn.close()
        await search.close()
    finally:
        stack.stop_all()
        await cleanup(stack, f"{stack.index_prefix}unused-", dsn)
    sizes = {k: sum(map(len, v)) / len(v) for k, v in bodies.items()}
    print()
    print("| measure (median of the rounds) | metrics JSON | metrics OTLP |"
          " OTLP/JSON (per round) | logs JSON | logs OTLP | OTLP/JSON (per round) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, key in (("API accepted (records/s)", "accept_rate"),
                       ("end to end, visible (records/s)", "rate")):
        cells = []
        for kind in ("metrics", "logs"):
            json_rates = [r[key] for r in results[(kind, "json")]]
            otlp_rates = [r[key] for r in results[(kind, "otlp")]]
            ratios = [o / j for o, j in zip(otlp_rates, json_rates, strict=True)]
            cells.append(f"{statistics.median(json_rates):,.0f} | {statistics.median(otlp_rates):,.0f}"
                         f" | **{statistics.median(ratios):.2f}×**"
                         f" ({', '.join(f'{r:.2f}' for r in ratios)})")
        print(f"| {label} | {' | '.join(cells)} |")
    print(f"| decode CPU per 1,000 records (ms, median of 40; OTLP/JSON time) |"
          f" {cpu_metrics[0]:.2f} | {cpu_metrics[1]:.2f} | {cpu_metrics[1] / cpu_metrics[0]:.2f}× |"
          f" {cpu_logs[0]:.2f} | {cpu_logs[1]:.2f} | {cpu_logs[1] / cpu_logs[0]:.2f}× |")
    print(f"| request body (KiB per 1,000 records) | {sizes[('metrics', 'json')] / 1024:.0f} |"
          f" {sizes[('metrics', 'otlp')] / 1024:.0f} | |"
          f" {sizes[('logs', 'json')] / 1024:.0f} | {sizes[('logs', 'otlp')] / 1024:.0f} | |")
    print(f"\npoints={args.points} logs={args.logs} clients={args.clients} batch={BATCH}"
          f" rounds={args.rounds}"
          f" cores={os.cpu_count()}")


if __name__ == "__main__":
    asyncio.run(main())
