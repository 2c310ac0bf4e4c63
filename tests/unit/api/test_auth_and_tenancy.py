"""Every query endpoint: 401 without credentials, 403 across projects, no data leaks."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.conftest import ADMIN_HEADERS, drain

QUERY_ENDPOINTS = [
    ("GET", "/api/metrics/query?metric_name=latency&start_time=2024-03-01T11:00:00Z", None),
    ("POST", "/api/metrics/query-multiple", {"metrics": [{"name": "latency"}],
                                             "start_time": "2024-03-01T11:00:00Z",
                                             "end_time": "2024-03-01T12:00:00Z"}),
    ("GET", "/api/metrics/histogram?metric_name=latency&start_time=2024-03-01T11:00:00Z", None),
    ("GET", "/api/metrics/anomalies?metric_name=latency", None),
    ("GET", "/api/logs/query?start_time=2024-03-01T11:00:00Z", None),
    ("GET", "/api/logs/volume?start_time=2024-03-01T11:00:00Z", None),
    ("GET", "/api/logs/error-spikes?start_time=2024-03-01T11:00:00Z", None),
    ("GET", "/api/logs/patterns?start_time=2024-03-01T11:00:00Z", None),
    ("GET", "/api/logs/some-id/context", None),
]


async def _call(api: Any, method: str, url: str, body: Any, headers: dict[str, str]) -> Any:
    return await api.request(method, url, json=body, headers=headers)


@pytest.mark.parametrize(("method", "url", "body"), QUERY_ENDPOINTS)
async def test_no_token_is_401(api: Any, tenant: Any, method: str, url: str, body: Any) -> None:
    response = await _call(api, method, url, body, {"X-Project-ID": tenant.project_id})
    assert response.status == 401
    assert (await response.json())["error"]["details"]["field"] == "Authorization"


@pytest.mark.parametrize(("method", "url", "body"), QUERY_ENDPOINTS)
async def test_bad_token_is_401(api: Any, tenant: Any, method: str, url: str, body: Any) -> None:
    headers = {"Authorization": "Bearer opt_forged", "X-Project-ID": tenant.project_id}
    assert (await _call(api, method, url, body, headers)).status == 401


@pytest.mark.parametrize(("method", "url", "body"), QUERY_ENDPOINTS)
async def test_other_project_is_403(
    api: Any, tenant: Any, other_tenant: Any, method: str, url: str, body: Any
) -> None:
    headers = {"Authorization": f"Bearer {other_tenant.token}", "X-Project-ID": tenant.project_id}
    response = await _call(api, method, url, body, headers)
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "forbidden"


async def test_missing_project_header_is_400(api: Any, tenant: Any) -> None:
    response = await api.get("/api/logs/query", headers={"Authorization": f"Bearer {tenant.token}"})
    assert response.status == 400
    assert (await response.json())["error"]["details"]["field"] == "X-Project-ID"


async def test_each_project_sees_only_its_own_data(
    api: Any, tenant: Any, other_tenant: Any, container: Any
) -> None:
    point = {"name": "latency", "value": 1.0, "timestamp": "2024-03-01T11:30:00Z"}
    log = {"level": "ERROR", "message": "secret of alpha", "timestamp": "2024-03-01T11:30:00Z"}
    await api.post("/api/ingest/metrics", json={"metrics": [point]}, headers=tenant.ingest_headers)
    sent = await api.post("/api/ingest/logs", json={"logs": [log]}, headers=tenant.ingest_headers)
    await drain(container)
    log_id = f"{(await sent.json())['batch_id']}-00000"
    mine, theirs = tenant.query_headers, other_tenant.query_headers
    url = "/api/metrics/query?metric_name=latency&start_time=2024-03-01T11:00:00Z&time_bucket=1h"
    assert len((await (await api.get(url, headers=mine)).json())["points"]) == 1
    assert (await (await api.get(url, headers=theirs)).json())["points"] == []
    logs_url = "/api/logs/query?start_time=2024-03-01T11:00:00Z&search=secret"
    assert (await (await api.get(logs_url, headers=mine)).json())["total"] == 1
    assert (await (await api.get(logs_url, headers=theirs)).json())["total"] == 0
    assert (await api.get(f"/api/logs/{log_id}/context", headers=mine)).status == 200
    assert (await api.get(f"/api/logs/{log_id}/context", headers=theirs)).status == 404
    volume = "/api/logs/volume?start_time=2024-03-01T11:00:00Z&time_bucket=1h"
    assert (await (await api.get(volume, headers=theirs)).json())["total"] == 0


async def test_revoked_token_is_refused_at_once(api: Any, tenant: Any, container: Any) -> None:
    url = "/api/logs/query?start_time=2024-03-01T11:00:00Z"
    assert (await api.get(url, headers=tenant.query_headers)).status == 200
    token = next(t for t in container.tenancy().tokens.values())
    assert await container.authenticator().revoke(token.id)
    assert (await api.get(url, headers=tenant.query_headers)).status == 401


async def test_admin_endpoint_creates_a_working_project(api: Any) -> None:
    response = await api.post("/api/admin/projects", json={"name": "gamma"}, headers=ADMIN_HEADERS)
    assert response.status == 201
    made = await response.json()
    point = {"name": "x", "value": 1.0, "timestamp": "2024-03-01T11:30:00Z"}
    sent = await api.post("/api/ingest/metrics", json={"metrics": [point]},
                          headers={"X-API-Key": made["api_key"]})
    assert sent.status == 202
    duplicate = await api.post("/api/admin/projects", json={"name": "gamma"},
                               headers=ADMIN_HEADERS)
    assert duplicate.status == 409
