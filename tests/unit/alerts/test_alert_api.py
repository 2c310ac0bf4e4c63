"""/api/rules, /api/channels and /api/incidents through the lead's app on in-memory adapters."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from dependency_injector import providers

from opspilot.adapters.memory.notify import RecordingNotifier
from opspilot.domain.analysis import AnomalyReport, AnomalyRequest, LogCluster, LogLine
from opspilot.domain.errors import ServiceUnavailable
from opspilot.domain.ingest import MetricBatch
from opspilot.domain.metrics import MetricPoint
from opspilot.entrypoints.api.app import create_app
from opspilot.entrypoints.assembly import api_services
from tests.unit.conftest import NOW, Tenant


class _NoAnalyzer:
    """Stands in until adapters/ai/in_process.py exists (the metrics routes need one)."""

    async def detect_anomalies(self, request: AnomalyRequest) -> AnomalyReport:
        raise ServiceUnavailable("no analyzer in this test")

    async def cluster_logs(self, lines: Sequence[LogLine], include_members: bool = False
                           ) -> list[LogCluster]:
        raise ServiceUnavailable("no analyzer in this test")


@pytest.fixture
async def engine(container: Any) -> Any:
    """The container's alert engine, delivering to a recording notifier."""
    if importlib.util.find_spec("opspilot.adapters.ai.in_process") is None:
        container.analyzer.override(providers.Object(_NoAnalyzer()))
    notifier = RecordingNotifier()
    container.notifier.override(providers.Object(notifier))
    return container.alert_rules(), container.evaluator(), notifier


@pytest.fixture
async def api(aiohttp_client: Any, container: Any, engine: Any) -> Any:
    return await aiohttp_client(create_app(api_services(container)))


RULE = {"name": "checkout latency", "metric_name": "latency", "service_name": "checkout",
        "threshold": 100, "window": "5m", "severity": "critical"}


async def _post(api: Any, path: str, body: Any, tenant: Tenant, status: int = 201) -> Any:
    response = await api.post(path, json=body, headers=tenant.query_headers)
    assert response.status == status, await response.text()
    return await response.json() if response.status != 204 else None


async def _get(api: Any, path: str, tenant: Tenant, status: int = 200) -> Any:
    response = await api.get(path, headers=tenant.query_headers)
    assert response.status == status, await response.text()
    return await response.json()


async def test_rule_crud(api: Any, tenant: Tenant) -> None:
    channel = await _post(api, "/api/channels", {
        "name": "ops", "type": "webhook", "target": "https://hooks.example.com/a?token=abc",
        "secret": "0123456789abcdef"}, tenant)
    created = await _post(api, "/api/rules", {**RULE, "channels": [channel["id"]]}, tenant)
    assert created["window"] == "5m" and created["for_duration"] == "0"
    assert created["comparator"] == "gt" and created["aggregation"] == "avg"
    assert created["state"]["status"] == "ok" and created["channels"] == [channel["id"]]
    rule_path = f"/api/rules/{created['id']}"

    listed = await _get(api, "/api/rules", tenant)
    assert [r["id"] for r in listed["rules"]] == [created["id"]]
    assert (await _get(api, rule_path, tenant))["name"] == "checkout latency"

    response = await api.put(rule_path, json={**RULE, "threshold": 250, "for_duration": "2m"},
                             headers=tenant.query_headers)
    replaced = await response.json()
    assert response.status == 200 and replaced["threshold"] == 250
    assert replaced["for_duration"] == "2m" and replaced["channels"] == []

    response = await api.patch(rule_path, json={"window": "1h", "service_name": None},
                               headers=tenant.query_headers)
    patched = await response.json()
    assert patched["window"] == "1h" and patched["service_name"] is None
    assert patched["threshold"] == 250 and patched["created_at"] == created["created_at"]

    assert (await _post(api, f"{rule_path}/disable", None, tenant, 200))["enabled"] is False
    assert (await _post(api, f"{rule_path}/enable", None, tenant, 200))["enabled"] is True

    response = await api.delete(rule_path, headers=tenant.query_headers)
    assert response.status == 204
    await _get(api, rule_path, tenant, 404)


async def test_channel_crud_never_shows_the_secret(api: Any, tenant: Tenant) -> None:
    secret = "0123456789abcdef-very-secret"
    hook = await _post(api, "/api/channels", {
        "name": "hook", "type": "webhook", "secret": secret,
        "target": "https://hooks.example.com/in?token=abc"}, tenant)
    slack = await _post(api, "/api/channels", {
        "name": "slack", "type": "slack",
        "target": "https://hooks.slack.com/services/T000/B000/XXXXXXXX"}, tenant)
    mail = await _post(api, "/api/channels", {
        "name": "mail", "type": "email", "target": "oncall@example.com"}, tenant)
    assert hook["has_secret"] is True and hook["target"] == "https://hooks.example.com/in?****"
    assert slack["target"] == "https://hooks.slack.com/services/T000/B000/****"
    assert mail["target"] == "oncall@example.com"
    listed = await api.get("/api/channels", headers=tenant.query_headers)
    text = await listed.text()
    assert secret not in text and "XXXXXXXX" not in text and "token=abc" not in text
    assert [c["name"] for c in (await listed.json())["channels"]] == ["hook", "mail", "slack"]

    tested = await _post(api, f"/api/channels/{hook['id']}/test", None, tenant, 200)
    assert tested["ok"] is True and tested["detail"] == "delivered"

    rule = await _post(api, "/api/rules", {**RULE, "channels": [mail["id"]]}, tenant)
    conflict = await api.delete(f"/api/channels/{mail['id']}", headers=tenant.query_headers)
    assert conflict.status == 409
    assert (await conflict.json())["error"]["details"]["rules"] == [rule["id"]]
    response = await api.delete(f"/api/channels/{hook['id']}", headers=tenant.query_headers)
    assert response.status == 204
    await _get(api, f"/api/channels/{hook['id']}", tenant, 404)


async def test_incidents_through_the_api(
    api: Any, tenant: Tenant, container: Any, engine: Any
) -> None:
    _, evaluator, notifier = engine
    channel = await _post(api, "/api/channels", {
        "name": "mail", "type": "email", "target": "oncall@example.com"}, tenant)
    rule = await _post(api, "/api/rules", {**RULE, "channels": [channel["id"]]}, tenant)
    start = NOW - timedelta(minutes=10)
    points = [MetricPoint(tenant.project_id, start + timedelta(minutes=i), "latency", 300.0,
                          "checkout") for i in range(10)]
    await container.metric_store().write_batches(
        [MetricBatch("m1", tenant.project_id, NOW, points)])
    report = await evaluator.evaluate(await container.rules().enabled_rules(), NOW)
    assert len(report.fired) == 1 and len(notifier.sent) == 1

    assert (await _get(api, f"/api/rules/{rule['id']}", tenant))["state"]["status"] == "firing"
    listed = await _get(api, "/api/incidents?status=open", tenant)
    (incident,) = listed["incidents"]
    assert incident["rule_id"] == rule["id"] and incident["severity"] == "critical"
    assert (await _get(api, "/api/incidents?status=resolved", tenant))["incidents"] == []
    assert len((await _get(api, f"/api/incidents?rule_id={rule['id']}&limit=1",
                           tenant))["incidents"]) == 1

    path = f"/api/incidents/{incident['id']}"
    detail = await _get(api, path, tenant)
    assert [e["event"] for e in detail["timeline"]] == ["fired"]
    assert detail["values"] == [300.0] and detail["links"]["logs"].startswith("/api/logs/query")
    assert [(d["channel_id"], d["ok"]) for d in detail["deliveries"]] == [(channel["id"], True)]

    acked = await _post(api, f"{path}/acknowledge", None, tenant, 200)
    assert acked["status"] == "acknowledged" and acked["timeline"][-1]["event"] == "acknowledged"
    resolved = await _post(api, f"{path}/resolve", None, tenant, 200)
    assert resolved["status"] == "resolved" and resolved["resolved_at"] is not None
    assert resolved["timeline"][-1]["detail"].startswith("resolved by ")
    conflict = await api.post(f"{path}/acknowledge", headers=tenant.query_headers)
    assert conflict.status == 409


async def test_another_project_sees_nothing(
    api: Any, tenant: Tenant, other_tenant: Tenant, container: Any, engine: Any
) -> None:
    channel = await _post(api, "/api/channels", {
        "name": "mail", "type": "email", "target": "oncall@example.com"}, tenant)
    rule = await _post(api, "/api/rules", {**RULE, "channels": [channel["id"]]}, tenant)
    points = [MetricPoint(tenant.project_id, NOW - timedelta(minutes=1), "latency", 500.0,
                          "checkout")]
    await container.metric_store().write_batches(
        [MetricBatch("m2", tenant.project_id, NOW, points)])
    await engine[1].evaluate(await container.rules().enabled_rules(), NOW)
    (incident,) = (await _get(api, "/api/incidents", tenant))["incidents"]

    for method, path in [
        ("GET", f"/api/rules/{rule['id']}"), ("PATCH", f"/api/rules/{rule['id']}"),
        ("PUT", f"/api/rules/{rule['id']}"), ("DELETE", f"/api/rules/{rule['id']}"),
        ("POST", f"/api/rules/{rule['id']}/disable"),
        ("GET", f"/api/channels/{channel['id']}"), ("DELETE", f"/api/channels/{channel['id']}"),
        ("POST", f"/api/channels/{channel['id']}/test"),
        ("GET", f"/api/incidents/{incident['id']}"),
        ("POST", f"/api/incidents/{incident['id']}/acknowledge"),
        ("POST", f"/api/incidents/{incident['id']}/resolve"),
    ]:
        body = {"name": "x"} if method == "PATCH" else RULE if method == "PUT" else None
        response = await api.request(method, path, json=body, headers=other_tenant.query_headers)
        assert response.status == 404, (method, path, await response.text())
        assert (await response.json())["error"]["code"] == "not_found"
    assert (await _get(api, "/api/rules", other_tenant))["rules"] == []
    assert (await _get(api, "/api/channels", other_tenant))["channels"] == []
    assert (await _get(api, "/api/incidents", other_tenant))["incidents"] == []
    stolen = await api.post("/api/rules", json={**RULE, "channels": [channel["id"]]},
                            headers=other_tenant.query_headers)
    assert stolen.status == 400
    assert (await stolen.json())["error"]["details"]["field"] == "channels[0]"
    # and the owner's data is untouched
    assert (await _get(api, f"/api/rules/{rule['id']}", tenant))["enabled"] is True
    assert (await _get(api, f"/api/incidents/{incident['id']}", tenant))["status"] == "open"


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/rules"), ("POST", "/api/rules"), ("GET", "/api/channels"),
    ("GET", "/api/incidents"), ("POST", "/api/incidents/x/resolve"),
])
async def test_credentials_are_required(
    api: Any, tenant: Tenant, other_tenant: Tenant, method: str, path: str
) -> None:
    anonymous = await api.request(method, path, json=RULE,
                                  headers={"X-Project-ID": tenant.project_id})
    assert anonymous.status == 401
    bad_token = await api.request(method, path, json=RULE, headers={
        "Authorization": "Bearer nope", "X-Project-ID": tenant.project_id})
    assert bad_token.status == 401
    not_member = await api.request(method, path, json=RULE, headers={
        "Authorization": f"Bearer {tenant.token}", "X-Project-ID": other_tenant.project_id})
    assert not_member.status == 403
    assert (await not_member.json())["error"]["details"]["field"] == "X-Project-ID"


BAD_RULES = [
    ({**RULE, "window": "7x"}, "window"),
    ({**RULE, "window": "2d"}, "window"),
    ({**RULE, "for_duration": "-1m"}, "for_duration"),
    ({**RULE, "comparator": "eq"}, "comparator"),
    ({**RULE, "aggregation": "median"}, "aggregation"),
    ({**RULE, "severity": "fatal"}, "severity"),
    ({**RULE, "kind": "magic"}, "kind"),
    ({k: v for k, v in RULE.items() if k != "threshold"}, "threshold"),
    ({**RULE, "threshold": "high"}, "threshold"),
    ({**RULE, "metric_name": "bad name!"}, "metric_name"),
    ({**RULE, "name": ""}, "name"),
    ({**RULE, "colour": "red"}, "colour"),
    ({**RULE, "channels": ["nope"]}, "channels[0]"),
    ({**RULE, "kind": "anomaly", "threshold": -1}, "threshold"),
]


@pytest.mark.parametrize(("body", "field"), BAD_RULES)
async def test_bad_rules_name_the_field(
    api: Any, tenant: Tenant, body: dict[str, Any], field: str
) -> None:
    response = await api.post("/api/rules", json=body, headers=tenant.query_headers)
    assert response.status == 400, await response.text()
    assert (await response.json())["error"]["details"]["field"] == field


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "x", "type": "pager", "target": "https://a.example"}, "type"),
    ({"name": "x", "type": "webhook", "target": "ftp://a.example/x"}, "target"),
    ({"name": "x", "type": "webhook", "target": "https://u:p@a.example/x"}, "target"),
    ({"name": "x", "type": "webhook", "target": "https://a.example", "secret": "short"},
     "secret"),
    ({"name": "x", "type": "slack", "target": "https://hooks.slack.com/x",
      "secret": "0123456789abcdef"}, "secret"),
    ({"name": "x", "type": "email", "target": "not-an-address"}, "target"),
    ({"name": "", "type": "email", "target": "a@b.c"}, "name"),
])
async def test_bad_channels_name_the_field(
    api: Any, tenant: Tenant, body: dict[str, Any], field: str
) -> None:
    response = await api.post("/api/channels", json=body, headers=tenant.query_headers)
    assert response.status == 400, await response.text()
    assert (await response.json())["error"]["details"]["field"] == field


@pytest.mark.parametrize(("query", "field"), [
    ("status=bogus", "status"), ("limit=0", "limit"), ("limit=5000", "limit"),
    ("colour=red", "colour"),
])
async def test_bad_incident_queries_name_the_field(
    api: Any, tenant: Tenant, query: str, field: str
) -> None:
    response = await api.get(f"/api/incidents?{query}", headers=tenant.query_headers)
    assert response.status == 400
    assert (await response.json())["error"]["details"]["field"] == field


async def test_patch_refuses_nulls_and_empty_bodies(api: Any, tenant: Tenant) -> None:
    rule = await _post(api, "/api/rules", RULE, tenant)
    for body, field in [({"name": None}, "name"), ({}, "body"), ({"window": "0"}, "window")]:
        response = await api.patch(f"/api/rules/{rule['id']}", json=body,
                                   headers=tenant.query_headers)
        assert response.status == 400, body
        assert (await response.json())["error"]["details"]["field"] == field


async def test_openapi_lists_the_alert_routes(api: Any) -> None:
    doc = await (await api.get("/api/openapi.json")).json()
    assert {"post", "get"} <= set(doc["paths"]["/api/rules"])
    assert {"get", "put", "patch", "delete"} <= set(doc["paths"]["/api/rules/{rule_id}"])
    assert "RuleBody" in doc["components"]["schemas"]
    assert "ChannelBody" in doc["components"]["schemas"]
