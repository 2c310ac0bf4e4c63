"""The explorer's discovery endpoints (/api/metrics/names, /services, /tags) and /api/me:
tenancy, the default window, limits and the errors of bad input."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from opspilot.domain.tenancy import Role, digest
from tests.unit.conftest import NOW, Tenant, drain


def _point(name: str, minutes_ago: float, service: str | None = None,
           tags: dict[str, str] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": name, "value": 1.0,
                           "timestamp": (NOW - timedelta(minutes=minutes_ago)).isoformat()}
    if service:
        doc["service"] = service
    if tags:
        doc["tags"] = tags
    return doc


@pytest.fixture
async def loaded(api: Any, tenant: Tenant, other_tenant: Tenant, container: Any) -> Tenant:
    # "now" is NOW (the fixed clock); ingest accepts points within the retention
    mine = [_point("latency", 5, "api", {"region": "eu"}), _point("latency", 6, "web", {"region": "us", "tier": "gold"}),
            _point("errors", 30, "api"), _point("old", 60 * 30, "batch", {"zone": "z"})]
    theirs = [_point("secret_metric", 5, "secret_service", {"secret": "yes"})]
    for who, points in ((tenant, mine), (other_tenant, theirs)):
        response = await api.post("/api/ingest/metrics", json={"metrics": points},
                                  headers=who.ingest_headers)
        assert response.status == 202, await response.text()
    await drain(container)
    return tenant


async def test_names_default_to_the_last_24_hours(api: Any, loaded: Tenant) -> None:
    response = await api.get("/api/metrics/names", headers=loaded.query_headers)
    assert response.status == 200
    assert await response.json() == {"names": ["errors", "latency"], "truncated": False}
    start = (NOW - timedelta(days=2)).isoformat().replace("+00:00", "Z")
    wide = await (await api.get(f"/api/metrics/names?start_time={start}&limit=2",
                                headers=loaded.query_headers)).json()
    assert wide == {"names": ["errors", "latency"], "truncated": True}


async def test_services_of_all_metrics_or_of_one(api: Any, loaded: Tenant) -> None:
    everything = await (await api.get("/api/metrics/services",
                                      headers=loaded.query_headers)).json()
    assert everything == {"metric_name": None, "services": ["api", "web"], "truncated": False}
    errors = await (await api.get("/api/metrics/services?metric_name=errors",
                                  headers=loaded.query_headers)).json()
    assert errors["services"] == ["api"]


async def test_tags_of_a_metric(api: Any, loaded: Tenant) -> None:
    doc = await (await api.get("/api/metrics/tags?metric_name=latency",
                               headers=loaded.query_headers)).json()
    assert doc == {"metric_name": "latency", "truncated": False, "tags": [
        {"key": "region", "values": ["eu", "us"]}, {"key": "tier", "values": ["gold"]}]}
    cut = await (await api.get("/api/metrics/tags?metric_name=latency&limit=1",
                               headers=loaded.query_headers)).json()
    assert cut == {"metric_name": "latency", "truncated": True,
                   "tags": [{"key": "region", "values": ["eu"]}]}


async def test_discovery_never_crosses_projects(api: Any, loaded: Tenant,
                                                other_tenant: Tenant) -> None:
    for path in ("/api/metrics/names", "/api/metrics/services",
                 "/api/metrics/tags?metric_name=secret_metric"):
        text = await (await api.get(path, headers=loaded.query_headers)).text()
        assert "secret" not in text.replace("secret_metric\"", ""), (path, text)
        # B's token asking for A's project is refused
        crossing = {**other_tenant.query_headers, "X-Project-ID": loaded.project_id}
        refused = await api.get(path, headers=crossing)
        assert refused.status == 403
        assert (await refused.json())["error"]["details"]["field"] == "X-Project-ID"
    theirs = await (await api.get("/api/metrics/names",
                                  headers=other_tenant.query_headers)).json()
    assert theirs["names"] == ["secret_metric"]


@pytest.mark.parametrize(("query", "field"), [
    ("/api/metrics/names?limit=0", "limit"),
    ("/api/metrics/names?limit=10001", "limit"),
    ("/api/metrics/services?metric_name=bad%20name", "metric_name"),
    ("/api/metrics/tags", "metric_name"),
    ("/api/metrics/tags?metric_name=x&limit=1001", "limit"),
    ("/api/metrics/names?start_time=2020-01-01T00:00:00Z&end_time=2024-01-01T00:00:00Z",
     "start_time"),
    ("/api/metrics/names?start_time=yesterday", "start_time"),
])
async def test_bad_input_names_the_field(api: Any, tenant: Tenant, query: str,
                                         field: str) -> None:
    response = await api.get(query, headers=tenant.query_headers)
    assert response.status == 400, await response.text()
    assert (await response.json())["error"]["details"]["field"] in (field, "end_time")


async def test_discovery_needs_a_token(api: Any, tenant: Tenant) -> None:
    response = await api.get("/api/metrics/names", headers={"X-Project-ID": tenant.project_id})
    assert response.status == 401


async def test_me_lists_the_tokens_projects(api: Any, container: Any, tenant: Tenant,
                                            other_tenant: Tenant) -> None:
    response = await api.get("/api/me", headers={"Authorization": f"Bearer {tenant.token}"})
    assert response.status == 200
    doc = await response.json()
    assert doc["projects"] == [{"id": tenant.project_id, "name": "alpha", "role": "owner"}]
    assert doc["user_id"]
    # a user in two projects sees both, by name
    principal = await container.authenticator().principal(tenant.token)
    await container.tenancy().add_membership(principal.user_id, other_tenant.project_id,
                                             Role.VIEWER)
    await container.cache().delete(f"principal:{digest(tenant.token)}")
    doc = await (await api.get("/api/me", headers={"Authorization": f"Bearer {tenant.token}"})).json()
    assert [(p["name"], p["role"]) for p in doc["projects"]] == [("alpha", "owner"),
                                                                  ("beta", "viewer")]
    for headers in ({}, {"Authorization": "Bearer opt_wrong"}, {"Authorization": "Basic x"}):
        assert (await api.get("/api/me", headers=headers)).status == 401


