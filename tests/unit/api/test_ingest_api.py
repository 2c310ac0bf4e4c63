"""Ingestion endpoints: auth, validation, 202 after the queue holds the batch."""

from __future__ import annotations

from typing import Any

import pytest

from opspilot.domain.ingest import Stream
from tests.unit.conftest import drain

POINT = {"name": "latency_ms_p95", "value": 12.5, "service": "api",
         "timestamp": "2024-03-01T11:30:00Z", "tags": {"endpoint": "/users"}}
LOG = {"level": "ERROR", "message": "Database connection failed", "service": "api",
       "timestamp": "2024-03-01T11:30:00Z", "context": {"error_code": "DB_001"},
       "trace_id": "abc123"}


async def test_metrics_accepted_then_stored(api: Any, tenant: Any, container: Any) -> None:
    response = await api.post("/api/ingest/metrics", json={"metrics": [POINT, POINT]},
                              headers=tenant.ingest_headers)
    assert response.status == 202
    body = await response.json()
    assert body["accepted"] == 2 and body["batch_id"]
    assert await container.memory_queue().depth(Stream.METRICS) == 1
    await drain(container)
    assert container.metric_store().count(tenant.project_id) == 2


async def test_logs_accepted_then_stored(api: Any, tenant: Any, container: Any) -> None:
    response = await api.post("/api/ingest/logs", json={"logs": [LOG]},
                              headers=tenant.ingest_headers)
    assert response.status == 202
    await drain(container)
    found = await api.get("/api/logs/query?start_time=2024-03-01T11:00:00Z",
                          headers=tenant.query_headers)
    logs = (await found.json())["logs"]
    assert [entry["message"] for entry in logs] == ["Database connection failed"]
    assert logs[0]["id"].startswith((await response.json())["batch_id"])


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "opk_not-a-key"}])
async def test_ingest_needs_a_known_key(api: Any, headers: dict[str, str]) -> None:
    response = await api.post("/api/ingest/metrics", json={"metrics": [POINT]}, headers=headers)
    assert response.status == 401
    error = (await response.json())["error"]
    assert error["code"] == "unauthenticated" and error["details"]["field"] == "X-API-Key"


async def test_a_token_is_not_an_api_key(api: Any, tenant: Any) -> None:
    response = await api.post("/api/ingest/metrics", json={"metrics": [POINT]},
                              headers={"X-API-Key": tenant.token})
    assert response.status == 401


BAD_METRICS = [
    ({"metrics": []}, "metrics"),
    ({"points": [POINT]}, "metrics"),
    ({"metrics": [{**POINT, "timestamp": "2024-03-01T11:30:00"}]}, "metrics[0].timestamp"),
    ({"metrics": [{**POINT, "timestamp": None}]}, "metrics[0].timestamp"),
    ({"metrics": [{k: v for k, v in POINT.items() if k != "timestamp"}]}, "metrics[0].timestamp"),
    ({"metrics": [{**POINT, "value": "12"}]}, "metrics[0].value"),
    ({"metrics": [{**POINT, "name": "bad name!"}]}, "metrics[0].name"),
    ({"metrics": [{**POINT, "tags": {"k": 5}}]}, "metrics[0].tags.k"),
    ({"metrics": [POINT] * 10_001}, "metrics"),
    ({"metrics": [{**POINT, "extra": 1}]}, "metrics[0].extra"),
]


@pytest.mark.parametrize(("body", "field"), BAD_METRICS)
async def test_bad_metrics_name_the_field(
    api: Any, tenant: Any, container: Any, body: dict[str, Any], field: str
) -> None:
    response = await api.post("/api/ingest/metrics", json=body, headers=tenant.ingest_headers)
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "invalid_input"
    assert error["details"]["field"] == field
    assert await container.memory_queue().depth(Stream.METRICS) == 0


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b'{"metrics": [{"value": NaN}]}'])
async def test_malformed_bodies_are_400(api: Any, tenant: Any, raw: bytes) -> None:
    response = await api.post("/api/ingest/metrics", data=raw,
                              headers={**tenant.ingest_headers, "Content-Type": "application/json"})
    assert response.status == 400
    assert "error" in await response.json()


async def test_non_finite_value_is_refused(api: Any, tenant: Any) -> None:
    raw = b'{"metrics": [{"name": "x", "value": Infinity, "timestamp": "2024-03-01T11:30:00Z"}]}'
    response = await api.post("/api/ingest/metrics", data=raw, headers=tenant.ingest_headers)
    assert response.status == 400


async def test_oversize_body_is_413(api: Any, tenant: Any) -> None:
    huge = b'{"logs": [{"level": "INFO", "message": "' + b"x" * (11 * 1024 * 1024) + b'"}]}'
    response = await api.post("/api/ingest/logs", data=huge, headers=tenant.ingest_headers)
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "body_too_large"


BAD_LOGS = [
    ({"logs": [{**LOG, "level": "LOUD"}]}, "logs[0].level"),
    ({"logs": [{**LOG, "message": ""}]}, "logs[0].message"),
    ({"logs": [{**LOG, "message": "x" * 40_000}]}, "logs[0].message"),
    ({"logs": [{**LOG, "timestamp": "yesterday"}]}, "logs[0].timestamp"),
    ({"logs": [{**LOG, "context": {"blob": "y" * 20_000}}]}, "logs[0].context"),
    ({"logs": [{**LOG, "trace_id": "t" * 200}]}, "logs[0].trace_id"),
]


@pytest.mark.parametrize(("body", "field"), BAD_LOGS)
async def test_bad_logs_name_the_field(
    api: Any, tenant: Any, body: dict[str, Any], field: str
) -> None:
    response = await api.post("/api/ingest/logs", json=body, headers=tenant.ingest_headers)
    assert response.status == 400
    assert (await response.json())["error"]["details"]["field"] == field


async def test_level_aliases_are_normalised(api: Any, tenant: Any, container: Any) -> None:
    body = {"logs": [{**LOG, "level": "warning"}, {**LOG, "level": "critical"}]}
    response = await api.post("/api/ingest/logs", json=body, headers=tenant.ingest_headers)
    assert response.status == 202
    await drain(container)
    found = await api.get("/api/logs/query?start_time=2024-03-01T11:00:00Z",
                          headers=tenant.query_headers)
    assert sorted(e["level"] for e in (await found.json())["logs"]) == ["FATAL", "WARN"]


async def test_full_queue_answers_429_with_retry_after(api: Any, tenant: Any, container: Any) -> None:
    container.memory_queue().max_depth = 1
    first = await api.post("/api/ingest/metrics", json={"metrics": [POINT]},
                           headers=tenant.ingest_headers)
    second = await api.post("/api/ingest/metrics", json={"metrics": [POINT]},
                            headers=tenant.ingest_headers)
    assert first.status == 202
    assert second.status == 429
    assert int(second.headers["Retry-After"]) >= 1


# -- timestamps the system would not keep ------------------------------------------------
# The clock stands at 2024-03-01T12:00Z; retention is 90 days for metrics, 30 for logs.


@pytest.mark.parametrize(("stream", "item", "stamp", "field", "says"), [
    ("metrics", POINT, "2024-03-01T12:10:01Z", "metrics[1].timestamp", "ahead"),
    ("metrics", POINT, "2023-12-02T11:59:59Z", "metrics[1].timestamp", "90-day retention"),
    ("logs", LOG, "2024-03-01T17:40:01+05:30", "logs[1].timestamp", "ahead"),
    ("logs", LOG, "2024-01-31T11:59:59Z", "logs[1].timestamp", "30-day retention"),
])
async def test_timestamps_that_would_vanish_are_refused_by_position(
    api: Any, tenant: Any, container: Any, stream: str, item: dict[str, Any], stamp: str,
    field: str, says: str,
) -> None:
    body = {stream: [item, {**item, "timestamp": stamp}]}
    response = await api.post(f"/api/ingest/{stream}", json=body, headers=tenant.ingest_headers)
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["details"]["field"] == field
    assert says in error["message"]
    assert await container.memory_queue().depth(Stream(f"{stream}.ingest")) == 0  # nothing half-taken


@pytest.mark.parametrize(("stream", "item", "stamps"), [
    ("metrics", POINT, ["2024-03-01T12:10:00Z", "2023-12-02T12:00:00Z"]),
    ("logs", LOG, ["2024-03-01T12:10:00Z", "2024-01-31T12:00:00Z"]),
])
async def test_the_edges_of_the_window_are_accepted(
    api: Any, tenant: Any, stream: str, item: dict[str, Any], stamps: list[str]
) -> None:
    body = {stream: [{**item, "timestamp": s} for s in stamps]}
    response = await api.post(f"/api/ingest/{stream}", json=body, headers=tenant.ingest_headers)
    assert response.status == 202, await response.text()
