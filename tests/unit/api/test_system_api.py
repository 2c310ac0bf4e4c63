"""Health, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

from typing import Any


async def test_health_and_readiness(api: Any) -> None:
    assert (await api.get("/healthz")).status == 200
    ready = await api.get("/readyz")
    body = await ready.json()
    assert ready.status == 200 and body["status"] == "ready"
    assert all(v == "ok" for v in body["checks"].values())


async def test_openapi_lists_every_route(api: Any) -> None:
    doc = await (await api.get("/api/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    for path in ("/api/ingest/metrics", "/api/ingest/logs", "/api/metrics/query",
                 "/api/metrics/query-multiple", "/api/metrics/histogram",
                 "/api/metrics/anomalies", "/api/logs/query", "/api/logs/{log_id}/context",
                 "/api/logs/volume", "/api/logs/error-spikes", "/api/logs/patterns"):
        assert path in doc["paths"], path
    body_schema = doc["components"]["schemas"]["MetricsIngestBody"]
    assert body_schema["properties"]["metrics"]["maxItems"] == 10_000


async def test_metrics_count_requests_by_route_template(api: Any, tenant: Any) -> None:
    await api.get("/api/logs/abc/context", headers=tenant.query_headers)
    text = await (await api.get("/metrics")).text()
    assert 'route="/api/logs/{log_id}/context"' in text
    assert "/api/logs/abc/context" not in text


async def test_unknown_route_is_json_404(api: Any) -> None:
    response = await api.get("/api/nothing")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"
