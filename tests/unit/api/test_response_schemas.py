"""Every success answer of every operation matches the schema `build_document()` gives it.

One scenario calls every operation on the in-memory app, with data behind it (metrics,
logs, a rule that fires, an incident acknowledged then resolved), and records each answer.
The tests then hold the recorded answers to the documented schemas (JSON Schema 2020-12,
formats checked), check that every documented success status was exercised, that every JSON
answer is compact orjson, and that the schemas are strict enough to reject a broken answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import attrs
import jsonschema_rs
import orjson
import pytest
from dependency_injector import providers

from opspilot.adapters.memory.notify import RecordingNotifier
from opspilot.application.alerting import AlertRules, RuleEvaluator
from opspilot.domain.ingest import MetricBatch
from opspilot.domain.metrics import MetricPoint
from opspilot.entrypoints.api.app import create_app
from opspilot.entrypoints.api.openapi import build_document
from opspilot.entrypoints.api.state import SERVICES
from opspilot.entrypoints.assembly import api_services
from tests.unit.conftest import ADMIN_HEADERS, NOW, Tenant, drain

DOCUMENT = build_document()
START = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
WINDOW = "start_time=2024-03-01T10:00:00Z&end_time=2024-03-01T12:00:00Z"


@attrs.frozen
class Answer:
    method: str
    template: str  # the path as the document names it
    status: int
    content_type: str
    body: bytes

    @property
    def doc(self) -> Any:
        return orjson.loads(self.body)


def success_schema(method: str, template: str, status: int) -> dict[str, Any] | None:
    """The documented body schema of a success status (None: documented without a body)."""
    response = DOCUMENT["paths"][template][method]["responses"][str(status)]
    content = response.get("content")
    if content is None:
        return None
    return dict(content["application/json"]["schema"])


def validator(method: str, template: str, status: int) -> Any:
    schema = success_schema(method, template, status)
    assert schema is not None, f"{method.upper()} {template} {status} documents no body"
    assert set(schema) == {"$ref"}, "success bodies are shared components"
    root = {**schema, "components": DOCUMENT["components"]}
    return jsonschema_rs.Draft202012Validator(root, validate_formats=True)


def problems(answer: Answer, doc: Any | None = None) -> list[str]:
    check = validator(answer.method, answer.template, answer.status)
    found = doc if doc is not None else answer.doc
    return [f"{e.instance_path}: {e.message}" for e in check.iter_errors(found)]


def documented_successes() -> set[tuple[str, str, int]]:
    return {
        (method, template, int(status))
        for template, operations in DOCUMENT["paths"].items()
        for method, operation in operations.items()
        for status in operation["responses"]
        if int(status) < 300 or (template == "/readyz" and status == "503")
    }


class Recorder:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.answers: list[Answer] = []

    async def call(self, method: str, template: str, path: str | None = None,
                   status: int = 200, headers: dict[str, str] | None = None,
                   json: Any = None, data: Any = None) -> Any:
        response = await self.client.request(method.upper(), path or template, json=json,
                                             data=data, headers=headers or {})
        body = await response.read()
        assert response.status == status, (method, path or template, body[:500])
        self.answers.append(Answer(method, template, status,
                                   response.headers.get("Content-Type", ""), body))
        return orjson.loads(body) if body else None


@pytest.fixture
async def engine(container: Any) -> tuple[AlertRules, RuleEvaluator]:
    # channel tests deliver nowhere: the container's alert engine on a recording notifier
    container.notifier.override(providers.Object(RecordingNotifier()))
    return container.alert_rules(), container.evaluator()


@pytest.fixture
async def client(aiohttp_client: Any, container: Any, engine: Any) -> Any:
    return await aiohttp_client(create_app(api_services(container)))


def _metrics(name: str, service: str, values: Sequence[float]) -> list[dict[str, Any]]:
    return [{"name": name, "value": v, "service": service, "tags": {"region": "eu"},
             "timestamp": (START + timedelta(minutes=i)).isoformat()}
            for i, v in enumerate(values)]


def _logs() -> list[dict[str, Any]]:
    base = datetime(2024, 3, 1, 11, 0, tzinfo=UTC)
    logs = [{"level": "INFO", "message": f"user {i} logged in from 10.0.0.{i}", "service": "api",
             "timestamp": (base + timedelta(minutes=i % 30, seconds=i)).isoformat()}
            for i in range(40)]
    logs += [{"level": "ERROR", "message": f"disk /dev/sd{chr(97 + i % 5)} is full",
              "service": "api", "trace_id": "t-1", "correlation_id": "c-1",
              "context": {"error_code": "DISK_1", "nested": {"n": [1, 2.5, None, True]}},
              "timestamp": (base + timedelta(minutes=40, seconds=i)).isoformat()}
             for i in range(25)]
    return logs


def _remote_write() -> bytes:
    import cramjam

    from opspilot.entrypoints.api.remote_write.remote_write_pb2 import (
        Label,
        Sample,
        TimeSeries,
        WriteRequest,
    )

    write = WriteRequest(timeseries=[TimeSeries(
        labels=[Label(name="__name__", value="rw_up"), Label(name="job", value="api")],
        samples=[Sample(value=1.0, timestamp=int(NOW.timestamp() * 1000))])])
    return bytes(cramjam.snappy.compress_raw(write.SerializeToString()))


async def run_scenario(client: Any, tenant: Tenant, container: Any,
                       engine: tuple[AlertRules, RuleEvaluator]) -> list[Answer]:
    rec = Recorder(client)
    q = tenant.query_headers

    # -- accounts
    admin = ADMIN_HEADERS
    await rec.call("post", "/api/admin/projects", status=201, json={"name": "gamma"},
                   headers=admin)
    made = await rec.call("post", "/api/admin/users", status=201, headers=admin,
                          json={"email": "root@example.com", "admin": True})
    root = {"Authorization": f"Bearer {made['token']}"}
    await rec.call("post", "/api/projects", status=201, json={"name": "delta"}, headers=root)
    members = f"/api/projects/{tenant.project_id}/members"
    t = "/api/projects/{project_id}/members"
    invited = await rec.call("post", t, members, status=201, headers=q,
                             json={"email": "viewer@example.com", "role": "viewer"})
    await rec.call("get", t, members, headers=q)
    await rec.call("patch", t + "/{user_id}", f"{members}/{invited['user_id']}", headers=q,
                   json={"role": "member"})
    await rec.call("delete", t + "/{user_id}", f"{members}/{invited['user_id']}", status=204,
                   headers=q)
    token = await rec.call("post", "/api/tokens", status=201, headers=q,
                           json={"name": "ci", "ttl": "1d"})
    await rec.call("get", "/api/tokens", headers=q)
    await rec.call("delete", "/api/tokens/{token_id}", f"/api/tokens/{token['id']}", status=204,
                   headers=q)
    key = await rec.call("post", "/api/keys", status=201, headers=q, json={"name": "spare"})
    await rec.call("get", "/api/keys", headers=q)
    rotated = await rec.call("post", "/api/keys/{key_id}/rotate", f"/api/keys/{key['id']}/rotate",
                             status=201, headers=q, json={"grace": "1h"})
    await rec.call("delete", "/api/keys/{key_id}", f"/api/keys/{rotated['id']}", status=204,
                   headers=q)
    await rec.call("get", "/api/projects/{project_id}/audit",
                   f"/api/projects/{tenant.project_id}/audit?limit=50", headers=q)
    project = f"/api/projects/{tenant.project_id}"
    await rec.call("patch", "/api/projects/{project_id}", project, headers=q,
                   json={"metric_retention": {"values_days": 15, "summary_days": 730}})
    await rec.call("get", "/api/projects/{project_id}", project, headers=q)

    # -- system
    await rec.call("get", "/healthz")
    await rec.call("get", "/readyz")

    # -- ingest
    latency = [50.0 + (i % 5) for i in range(120)]
    latency[100] = 400.0
    batch = _metrics("latency", "api", latency)
    # Values at the ingest bound (±1e150): the aggregates stay finite (no null reaches a
    # client since the bound; the schema keeps value nullable for the encoder's sake).
    batch += _metrics("huge", "api", [-1e150, 1e150])
    await rec.call("post", "/api/ingest/metrics", status=202, headers=tenant.ingest_headers,
                   json={"metrics": batch})
    await rec.call("post", "/api/ingest/logs", status=202, headers=tenant.ingest_headers,
                   json={"logs": _logs()})
    # the protocol doors (their JSON answers; protobuf ones are binary, tested elsewhere)
    at = str(int(NOW.timestamp() * 1e9))
    otlp_metrics = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{
        "name": "otlp_gauge", "gauge": {"dataPoints": [{"timeUnixNano": at, "asDouble": 1}]}}]}]}]}
    otlp_logs = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{
        "timeUnixNano": at, "severityNumber": 9, "body": {"stringValue": "otlp"}}]}]}]}
    for prefix in ("", "/otlp"):
        assert await rec.call("post", f"{prefix}/v1/metrics", headers=tenant.ingest_headers,
                              json=otlp_metrics) == {}
        assert await rec.call("post", f"{prefix}/v1/logs", headers=tenant.ingest_headers,
                              json=otlp_logs) == {}
    await rec.call("post", "/api/v1/write", status=204, data=_remote_write(),
                   headers={**tenant.ingest_headers, "Content-Type": "application/x-protobuf",
                            "Content-Encoding": "snappy"})
    await drain(container)

    # -- metrics
    t = "/api/metrics/query"
    series = await rec.call("get", t, f"{t}?metric_name=latency&service_name=api&{WINDOW}"
                            "&aggregation=p95&time_bucket=5m", headers=q)
    assert len(series["points"]) == 24
    overflow = await rec.call(
        "get", t, f"{t}?metric_name=huge&aggregation=p50&time_bucket=1h&{WINDOW}", headers=q)
    assert overflow["points"][0]["value"] == 0.0 and overflow["service_name"] is None
    await rec.call("post", "/api/metrics/query-multiple", headers=q, json={
        "metrics": [{"name": "latency", "service": "api"},
                    {"name": "huge", "aggregation": "max", "tags": {"region": "eu"}}],
        "start_time": "2024-03-01T10:00:00Z", "end_time": "2024-03-01T12:00:00Z"})
    names = await rec.call("get", "/api/metrics/names", f"/api/metrics/names?{WINDOW}",
                           headers=q)
    assert names["names"] == ["huge", "latency"]
    await rec.call("get", "/api/metrics/services",
                   f"/api/metrics/services?metric_name=latency&{WINDOW}", headers=q)
    tags = await rec.call("get", "/api/metrics/tags",
                          f"/api/metrics/tags?metric_name=latency&{WINDOW}", headers=q)
    assert tags["tags"] == [{"key": "region", "values": ["eu"]}]
    me = await rec.call("get", "/api/me", headers={"Authorization": q["Authorization"]})
    assert me["projects"][0]["id"] == tenant.project_id
    t = "/api/metrics/histogram"
    hist = await rec.call("get", t, f"{t}?metric_name=latency&bins=10&{WINDOW}", headers=q)
    assert len(hist["bins"]) == 10
    empty = await rec.call("get", t, f"{t}?metric_name=nothing&{WINDOW}", headers=q)
    assert empty["min"] is None and empty["bins"] == []
    t = "/api/metrics/anomalies"
    found = await rec.call("get", t, f"{t}?metric_name=latency&service_name=api&{WINDOW}"
                           f"&method=robust&threshold=0.3", headers=q)
    assert found["anomalies"] and all(a["score"] >= 0.3 for a in found["anomalies"])

    # -- logs
    t = "/api/logs/query"
    page = await rec.call("get", t, f"{t}?{WINDOW}&limit=10", headers=q)
    assert page["next_cursor"] is not None
    last = await rec.call("get", t, f"{t}?{WINDOW}&level=ERROR&search=disk&limit=100",
                          headers=q)
    assert last["next_cursor"] is None and last["logs"][0]["context"]["nested"]
    anchor = page["logs"][0]["id"]
    await rec.call("get", "/api/logs/{log_id}/context", f"/api/logs/{anchor}/context?before=3",
                   headers=q)
    await rec.call("get", "/api/logs/volume", f"/api/logs/volume?{WINDOW}&level=ERROR,INFO",
                   headers=q)
    spikes = await rec.call("get", "/api/logs/error-spikes",
                            f"/api/logs/error-spikes?{WINDOW}&time_bucket=5m", headers=q)
    assert spikes["spikes"] >= 1
    patterns = await rec.call("get", "/api/logs/patterns", f"/api/logs/patterns?{WINDOW}",
                              headers=q)
    assert patterns["logs_analyzed"] == 65

    # -- the Prometheus API (GET, and POST with a form where Prometheus takes one)
    at = {"query": 'sum by (service) (rate(latency[10m]))', "time": "1709289000",
          "stats": "all"}
    span = {"query": "latency", "start": "1709287200", "end": "1709290800", "step": "60"}
    for method, body in (("get", None), ("post", at)):
        path = "/api/v1/query" + ("?" + urlencode(at) if body is None else "")
        answer = await rec.call(method, "/api/v1/query", path, headers=q, data=body)
        assert answer["data"]["resultType"] == "vector" and answer["data"]["stats"]
        path = "/api/v1/query_range" + ("?" + urlencode(span) if body is None else "")
        answer = await rec.call(method, "/api/v1/query_range", path, headers=q,
                                data=span if body else None)
        assert answer["data"]["result"]
        match = {"match[]": "latency", "start": "1709287200"}
        path = "/api/v1/series" + ("?" + urlencode(match) if body is None else "")
        assert (await rec.call(method, "/api/v1/series", path, headers=q,
                               data=match if body else None))["data"]
        assert "service" in (await rec.call(method, "/api/v1/labels", headers=q,
                                            data={} if body else None))["data"]
    t = "/api/v1/label/{name}/values"
    assert (await rec.call("get", t, "/api/v1/label/service/values", headers=q))["data"]
    assert (await rec.call("get", "/api/v1/metadata", headers=q))["data"]
    await rec.call("get", "/api/v1/status/buildinfo", headers=q)

    # -- channels
    hook = await rec.call("post", "/api/channels", status=201, headers=q, json={
        "name": "hook", "type": "webhook", "target": "https://hooks.example.com/in?token=abc",
        "secret": "0123456789abcdef"})
    mail = await rec.call("post", "/api/channels", status=201, headers=q, json={
        "name": "mail", "type": "email", "target": "oncall@example.com"})
    await rec.call("get", "/api/channels", headers=q)
    await rec.call("get", "/api/channels/{channel_id}", f"/api/channels/{hook['id']}",
                   headers=q)
    await rec.call("post", "/api/channels/{channel_id}/test",
                   f"/api/channels/{hook['id']}/test", headers=q)

    # -- rules
    rule = await rec.call("post", "/api/rules", status=201, headers=q, json={
        "name": "checkout latency", "metric_name": "checkout_ms", "service_name": "checkout",
        "threshold": 100, "channels": [mail["id"]], "severity": "critical"})
    path = f"/api/rules/{rule['id']}"
    await rec.call("get", "/api/rules", headers=q)
    await rec.call("put", "/api/rules/{rule_id}", path, headers=q, json={
        "name": "checkout latency", "metric_name": "checkout_ms", "service_name": "checkout",
        "threshold": 150.5, "for_duration": "2m"})
    await rec.call("patch", "/api/rules/{rule_id}", path, headers=q,
                   json={"for_duration": "0", "channels": [mail["id"]]})
    await rec.call("post", "/api/rules/{rule_id}/disable", f"{path}/disable", headers=q)
    await rec.call("post", "/api/rules/{rule_id}/enable", f"{path}/enable", headers=q)
    anomaly_rule = await rec.call("post", "/api/rules", status=201, headers=q, json={
        "name": "odd latency", "metric_name": "latency", "kind": "anomaly",
        "tags": {"region": "eu"}})
    nulls = await rec.call("patch", "/api/rules/{rule_id}", f"/api/rules/{anomaly_rule['id']}",
                           headers=q, json={"service_name": None})
    assert nulls["service_name"] is None

    # -- incidents: the rule fires, is acknowledged, then resolved
    points = [MetricPoint(tenant.project_id, NOW - timedelta(minutes=10 - i), "checkout_ms",
                          300.0, "checkout") for i in range(10)]
    await container.metric_store().write_batches(
        [MetricBatch("m1", tenant.project_id, NOW, points)])
    report = await engine[1].evaluate(await container.rules().enabled_rules(), NOW)
    assert report.fired
    firing = await rec.call("get", "/api/rules/{rule_id}", path, headers=q)
    assert firing["state"]["status"] == "firing" and firing["state"]["last_value"] == 300.0
    (incident,) = (await rec.call("get", "/api/incidents", "/api/incidents?status=open",
                                  headers=q))["incidents"]
    path = f"/api/incidents/{incident['id']}"
    detail = await rec.call("get", "/api/incidents/{incident_id}", path, headers=q)
    assert detail["deliveries"]
    await rec.call("post", "/api/incidents/{incident_id}/acknowledge", f"{path}/acknowledge",
                   headers=q)
    await rec.call("post", "/api/incidents/{incident_id}/resolve", f"{path}/resolve", headers=q)
    await rec.call("get", "/api/incidents/{incident_id}", path, headers=q)

    # -- deletions (no body)
    await rec.call("delete", "/api/rules/{rule_id}", f"/api/rules/{rule['id']}", status=204,
                   headers=q)
    await rec.call("delete", "/api/channels/{channel_id}", f"/api/channels/{hook['id']}",
                   status=204, headers=q)

    # -- readiness when an adapter fails: 503, same body shape
    async def broken() -> None:
        raise ConnectionError("no route to host")

    client.server.app[SERVICES].readiness["broken"] = broken
    unready = await rec.call("get", "/readyz", status=503)
    assert unready["checks"]["broken"].startswith("failed:")
    return rec.answers


@pytest.fixture
async def answers(client: Any, tenant: Tenant, container: Any, engine: Any) -> list[Answer]:
    return await run_scenario(client, tenant, container, engine)


def _label(a: Answer) -> str:
    return f"{a.method.upper()} {a.template} {a.status}"


async def test_every_success_answer_matches_its_documented_schema(answers: list[Answer]) -> None:
    failures = {}
    for answer in answers:
        if success_schema(answer.method, answer.template, answer.status) is None:
            assert answer.body == b"", f"{_label(answer)} documents no body but has one"
            continue
        assert answer.content_type.startswith("application/json"), _label(answer)
        found = problems(answer)
        if found:
            failures[_label(answer)] = found[:5]
    assert not failures, failures


async def test_every_documented_success_status_is_exercised(answers: list[Answer]) -> None:
    exercised = {(a.method, a.template, a.status) for a in answers}
    assert exercised == documented_successes()


def test_every_success_with_a_body_documents_it() -> None:
    """Only 204s go without a body schema."""
    for method, template, status in documented_successes():
        schema = success_schema(method, template, status)
        assert (schema is None) == (status == 204), (method, template, status)


async def test_json_answers_are_compact_orjson(answers: list[Answer], client: Any) -> None:
    for answer in answers:
        if not answer.body:
            continue
        assert answer.body == orjson.dumps(orjson.loads(answer.body)), _label(answer)
    served = await (await client.get("/api/openapi.json")).read()
    assert served == orjson.dumps(orjson.loads(served))


async def test_the_schemas_reject_a_broken_answer(answers: list[Answer]) -> None:
    """The schemas have teeth: an undocumented field, a missing field or a field of the
    wrong type makes each recorded answer invalid."""
    for answer in answers:
        if not answer.body:
            continue
        doc = answer.doc
        assert problems(answer, {**doc, "undocumented": 1}), _label(answer)
        for key in doc:
            assert problems(answer, {k: v for k, v in doc.items() if k != key}), (
                _label(answer), key)
            assert problems(answer, {**doc, key: [["wrong type"]]}), (_label(answer), key)


async def test_a_series_point_is_held_to_its_fields(answers: list[Answer]) -> None:
    (answer, *_) = [a for a in answers if a.template == "/api/metrics/query"]
    doc = answer.doc
    point = doc["points"][0]
    assert set(point) == {"timestamp", "value", "count"}
    for broken in ({**point, "count": "1"}, {**point, "timestamp": "yesterday"},
                   {**point, "extra": 0}, {"timestamp": point["timestamp"], "value": 1.0}):
        assert problems(answer, {**doc, "points": [broken]}), broken
