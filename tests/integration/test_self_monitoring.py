"""Self-monitoring end to end: real OpsPilot processes, a real Prometheus scraping them, and
the Grafana dashboards checked against what the processes really export.

- `opspilot serve` (in memory; on PostgreSQL and OpenSearch too when OPSPILOT_DATABASE_URL
  and OPSPILOT_OPENSEARCH_URL are set, in a fresh schema and index prefix) and `opspilot ai`
  run as subprocesses on free loopback ports; the test creates a project, ingests, queries.
- Our own Prometheus (the Debian binary; `scripts/services up` installs it) scrapes them
  every second from a temporary config and storage directory, and is killed afterwards.
  Without the binary the Prometheus tests skip, or fail when CI or
  OPSPILOT_REQUIRE_SERVICES=1 is set.
- Every PromQL expression of deploy/grafana/dashboards must name only metrics the live
  processes export (a renamed metric breaks this), and Prometheus must accept it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.services import unavailable
from tests.unit.conftest import ADMIN_HEADERS, ADMIN_TOKEN
from tests.unit.test_cli_embedded import _free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent / "opspilot"
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
AI_SERVICE = ROOT / "src" / "opspilot" / "entrypoints" / "ai_service.py"
DEADLINE = 90.0  # seconds; the machine may be slow and busy

# Series Prometheus makes itself for every target (not exported by the processes).
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
                "or", "unless", "offset", "inf", "nan", "atan2"}


# -- processes ---------------------------------------------------------------------------------


def _wait_http(url: str, proc: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    proc.kill()
    pytest.fail(f"{what} did not become ready: {proc.communicate()[0]}")


def _stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.communicate(timeout=30)[0] or ""
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[0] or ""


def _call(url: str, body: object | None = None, headers: dict[str, str] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, headers={**(headers or {}), "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


class Processes:
    def __init__(self) -> None:
        self.targets: dict[str, str] = {}  # job → host:port
        self.stores: set[str] = set()  # "postgres", "opensearch" when configured

    def metrics_text(self, job: str) -> str:
        with urllib.request.urlopen(f"http://{self.targets[job]}/metrics", timeout=10) as r:
            return str(r.read().decode())


def _serve_env(stack: list[Any]) -> tuple[dict[str, str], set[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSPILOT_")}
    env["OPSPILOT_RATE_LIMITS_ENABLED"] = "false"
    env["OPSPILOT_ADMIN_TOKEN"] = ADMIN_TOKEN
    stores: set[str] = set()
    database_url = os.environ.get("OPSPILOT_DATABASE_URL")
    if database_url:
        schema = f"t_selfmon_{uuid.uuid4().hex[:10]}"
        env.update(OPSPILOT_DATABASE_URL=database_url, OPSPILOT_DATABASE_SCHEMA=schema)
        stack.append(("schema", database_url, schema))
        stores.add("postgres")
    opensearch_url = os.environ.get("OPSPILOT_OPENSEARCH_URL")
    if opensearch_url:
        prefix = f"t-selfmon-{uuid.uuid4().hex[:8]}-"
        env.update(OPSPILOT_OPENSEARCH_URL=opensearch_url, OPSPILOT_INDEX_PREFIX=prefix)
        stack.append(("indices", opensearch_url, prefix))
        stores.add("opensearch")
    return env, stores


def _clean_up(stack: list[Any]) -> None:
    for kind, url, name in stack:
        try:
            if kind == "schema":
                import asyncio

                import asyncpg

                async def drop(url: str = url, name: str = name) -> None:
                    conn = await asyncpg.connect(url)
                    try:
                        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
                    finally:
                        await conn.close()

                asyncio.run(drop())
            else:
                request = urllib.request.Request(
                    f"{url.rstrip('/')}/{name}*?ignore_unavailable=true", method="DELETE")
                urllib.request.urlopen(request, timeout=30)
        except Exception as exc:  # clean-up is best effort; report, do not mask the test
            print(f"clean-up of {kind} {name} failed: {exc}", file=sys.stderr)


def _traffic(base: str, ai: str | None) -> None:
    project = _call(f"{base}/api/admin/projects", {"name": "self-monitoring"}, ADMIN_HEADERS)
    key = {"X-API-Key": project["api_key"]}
    auth = {"Authorization": f"Bearer {project['token']}", "X-Project-ID": project["project_id"]}
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    stamps = [(now - timedelta(minutes=m)).isoformat() for m in range(30)]
    points = [{"name": "latency_ms_p95", "value": 100.0 + i, "service": "api", "timestamp": t}
              for i, t in enumerate(stamps)]
    logs = [{"level": "ERROR" if i % 5 == 0 else "INFO", "message": f"request {i} done",
             "service": "api", "timestamp": t} for i, t in enumerate(stamps)]
    assert _call(f"{base}/api/ingest/metrics", {"metrics": points}, key)["accepted"] == 30
    assert _call(f"{base}/api/ingest/logs", {"logs": logs}, key)["accepted"] == 30
    window = urllib.parse.urlencode({"start_time": (now - timedelta(hours=1)).isoformat(),
                                     "end_time": (now + timedelta(minutes=1)).isoformat()})
    metric_query = (f"{base}/api/metrics/query?metric_name=latency_ms_p95&service_name=api"
                    f"&time_bucket=5m&{window}")
    deadline = time.monotonic() + DEADLINE
    while True:  # the worker writes asynchronously
        found = _call(metric_query, headers=auth)
        if sum(p.get("count", 0) for p in found["points"]) == 30 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    _call(metric_query, headers=auth)  # a second time: a cache hit
    _call(f"{base}/api/logs/query?level=ERROR&{window}", headers=auth)
    if ai is not None:
        series = [{"timestamp": t, "value": 10.0 + (50.0 if i == 3 else i % 2)}
                  for i, t in enumerate(sorted(stamps))]
        _call(f"{ai}/ai/anomaly", {"metric_name": "latency", "data_points": series})


@pytest.fixture(scope="module")
def processes() -> Iterator[Processes]:
    found = Processes()
    stack: list[Any] = []
    procs: list[subprocess.Popen[str]] = []
    env, found.stores = _serve_env(stack)
    try:
        port = _free_port()
        serve = subprocess.Popen([str(BIN), "serve", "--port", str(port)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(serve)
        _wait_http(f"http://127.0.0.1:{port}/healthz", serve, "opspilot serve")
        found.targets["opspilot-api"] = f"127.0.0.1:{port}"
        ai = None
        if AI_SERVICE.exists():
            ai_port = _free_port()
            ai_proc = subprocess.Popen([str(BIN), "ai", "--port", str(ai_port)], env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True)
            procs.append(ai_proc)
            _wait_http(f"http://127.0.0.1:{ai_port}/healthz", ai_proc, "opspilot ai")
            found.targets["opspilot-ai"] = f"127.0.0.1:{ai_port}"
            ai = f"http://127.0.0.1:{ai_port}"
        _traffic(f"http://127.0.0.1:{port}", ai)
        yield found
    finally:
        for proc in procs:
            output = _stop(proc)
            if proc.returncode not in (0, -15):
                print(output, file=sys.stderr)
        _clean_up(stack)


# -- Prometheus ---------------------------------------------------------------------------------


def _prometheus_binary() -> str:
    binary = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if binary is None:
        message = "no prometheus binary (scripts/services up installs it)"
        unavailable("prometheus", message)
    return binary


@pytest.fixture(scope="module")
def prometheus(processes: Processes) -> Iterator[str]:
    binary = _prometheus_binary()
    with tempfile.TemporaryDirectory(prefix="opspilot-prom-") as tmp:
        config = Path(tmp) / "prometheus.yml"
        jobs = "".join(
            f"  - job_name: {job}\n    static_configs:\n      - targets: [\"{target}\"]\n"
            for job, target in processes.targets.items())
        config.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                          "  evaluation_interval: 1s\nscrape_configs:\n" + jobs)
        port = _free_port()
        proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp}/data",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp)
        try:
            _wait_http(f"http://127.0.0.1:{port}/-/ready", proc, "prometheus")
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.kill()
            proc.communicate(timeout=30)


def _query(prometheus: str, expr: str) -> dict[str, Any]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())  # type: ignore[no-any-return]


def _families(processes: Processes) -> list[str]:
    families = [
        "opspilot_http_requests_total", "opspilot_http_request_duration_seconds_bucket",
        "opspilot_ingest_accepted_total", "opspilot_worker_records_written_total",
        "opspilot_worker_batch_size_bucket", "opspilot_worker_write_duration_seconds_count",
        "opspilot_worker_last_write_timestamp_seconds", "opspilot_queue_depth",
        "opspilot_query_cache_lookups_total", "opspilot_query_duration_seconds_count",
        "opspilot_alert_ticks_total", "opspilot_alert_evaluation_duration_seconds_count",
        "opspilot_retention_runs_total", "opspilot_exporter_up",
    ]
    if "opspilot-ai" in processes.targets:
        families += ["opspilot_ai_requests_total", "opspilot_ai_request_duration_seconds_bucket"]
    if "postgres" in processes.stores:
        families += ["opspilot_db_pool_connections", "opspilot_pg_table_bytes",
                     "opspilot_pg_index_bytes", "opspilot_pg_rows_inserted_total",
                     "opspilot_pg_slow_queries"]
    if "opensearch" in processes.stores:
        families += ["opspilot_opensearch_docs", "opspilot_opensearch_store_bytes",
                     "opspilot_opensearch_search_queries_total"]
    return families


def test_prometheus_scrapes_every_family(processes: Processes, prometheus: str) -> None:
    missing = set(_families(processes)) | {f'up{{job="{job}"}} == 1' for job in processes.targets}
    deadline = time.monotonic() + DEADLINE
    while missing and time.monotonic() < deadline:
        for expr in sorted(missing):
            answer = _query(prometheus, expr)
            assert answer["status"] == "success", (expr, answer)
            if answer["data"]["result"]:
                missing.discard(expr)
        time.sleep(1)
    assert not missing, f"no series in Prometheus for {sorted(missing)}"
    written = _query(prometheus, "sum(opspilot_worker_records_written_total)")
    assert float(written["data"]["result"][0]["value"][1]) >= 60  # 30 points + 30 logs
    hits = _query(prometheus, 'sum(opspilot_query_cache_lookups_total{result="hit"})')
    assert hits["data"]["result"], "the repeated metric query was not a cache hit"


# -- the dashboards ----------------------------------------------------------------------------


def dashboard_expressions() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) for every query of every dashboard."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                found.append((path.name, panel["title"], target["expr"]))
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not functions,
    aggregations, keywords, label names (in `{…}`, `by (…)`), strings or durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\{[^}]*\}", "{}", text)
    text = re.sub(r"\[[^\]]*\]", "[]", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        if text[match.end():].lstrip().startswith("("):
            continue  # a function or an aggregation
        if match.group() not in PROMQL_WORDS:
            names.add(match.group())
    return names


def exported_series_names(exposition: str) -> set[str]:
    """Every series name the exposition's families can carry (declared families count even
    before their first sample: a counter with labels has none until it is first used)."""
    suffixes = {"counter": ("_total", "_created"), "gauge": ("",), "untyped": ("",),
                "unknown": ("",), "summary": ("", "_sum", "_count", "_created"),
                "histogram": ("_bucket", "_sum", "_count", "_created")}
    return {family.name + suffix for family in text_string_to_metric_families(exposition)
            for suffix in suffixes.get(family.type, ("",))}


def _offline_store_names() -> set[str]:
    """The store exporters' names, from the collectors themselves, when no PostgreSQL or
    OpenSearch is configured for the live processes (so a rename still fails here)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from opspilot.adapters.prometheus.exporters import (
        OpenSearchExporter,
        PoolCollector,
        PostgresExporter,
    )

    registry = CollectorRegistry()
    for collector in (PoolCollector(lambda: None), PostgresExporter(lambda: None),
                      OpenSearchExporter(None, "x")):
        registry.register(collector)
    return exported_series_names(generate_latest(registry).decode())


def test_metric_names_are_read_from_promql() -> None:
    expr = ('histogram_quantile(0.95, sum by (le, route) (rate(a_seconds_bucket{route=~"/api/x"}'
            '[$__rate_interval]))) / clamp_min(sum(rate(b_total[5m])), 1e-9) + time() - c'
            ' and on (job) up == 1')
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "c", "up"}


def test_there_are_four_dashboards_with_queries() -> None:
    titles = {json.loads(p.read_text())["title"] for p in DASHBOARDS.glob("*.json")}
    assert titles == {"OpsPilot / Platform Health", "OpsPilot / Ingestion Performance",
                      "OpsPilot / Query Performance", "OpsPilot / Alert Engine"}
    for path in DASHBOARDS.glob("*.json"):
        board = json.loads(path.read_text())
        assert {p["datasource"]["uid"] for p in board["panels"] if "datasource" in p} == {
            "opspilot-prometheus"}
        assert sum(len(p.get("targets", [])) for p in board["panels"]) >= 8, path.name


def test_dashboards_use_only_exported_metrics(processes: Processes) -> None:
    exported = set(PROMETHEUS_SERIES)
    for job in processes.targets:
        exported |= exported_series_names(processes.metrics_text(job))
    if not {"postgres", "opensearch"} <= processes.stores:
        exported |= {n for n in _offline_store_names()
                     if n.startswith(("opspilot_pg_", "opspilot_opensearch_",
                                      "opspilot_db_pool_"))}
    if "opspilot-ai" not in processes.targets:
        exported |= {"opspilot_ai_requests_total", "opspilot_ai_request_duration_seconds_bucket"}
    unknown = {}
    for board, title, expr in dashboard_expressions():
        names = metric_names(expr)
        assert names, f"{board} / {title}: no metric in {expr!r}"
        if missing := names - exported:
            unknown[f"{board} / {title}"] = sorted(missing)
    assert not unknown, f"dashboard queries read metrics nobody exports: {unknown}"


def test_prometheus_accepts_every_dashboard_query(prometheus: str) -> None:
    refused = {}
    for board, title, expr in dashboard_expressions():
        answer = _query(prometheus, expr.replace("$__rate_interval", "1m"))
        if answer["status"] != "success":
            refused[f"{board} / {title}: {expr}"] = answer.get("error")
    assert not refused, refused
