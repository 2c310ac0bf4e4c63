"""The AI service over HTTP (aiohttp test client): answers, limits, and every bad input as
a 4xx with the standard error body naming the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from opspilot.adapters.ai.in_process import InProcessAnalyzer
from opspilot.entrypoints.ai_service import AiLimits, create_ai_app

START = datetime(2024, 3, 1, tzinfo=UTC)
LIMITS = AiLimits(max_body_bytes=256 * 1024, max_points=500, max_logs=50)


def series(n: int = 120, spike_at: int | None = 100) -> list[dict[str, Any]]:
    values = [50.0 + (i % 5) for i in range(n)]
    if spike_at is not None:
        values[spike_at] = 400.0
    return [{"timestamp": (START + timedelta(minutes=i)).isoformat(), "value": v}
            for i, v in enumerate(values)]


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def client(aiohttp_client: Any, registry: CollectorRegistry) -> Any:
    return await aiohttp_client(create_ai_app(InProcessAnalyzer(), registry, LIMITS))


@pytest.mark.parametrize("method", [{"method": "robust"}, {}])
async def test_anomaly_flags_the_spike(client: Any, method: dict[str, str]) -> None:
    response = await client.post("/ai/anomaly", json={
        "metric_name": "latency", "data_points": series(), **method})
    assert response.status == 200
    body = await response.json()
    assert body["method"] == "robust" and body["count"] == len(body["anomalies"]) == 1
    (hit,) = body["anomalies"]
    assert hit["timestamp"] == (START + timedelta(minutes=100)).isoformat()
    assert hit["value"] == 400.0 and body["threshold"] <= hit["score"] <= 1
    assert hit["deviation"] > 3 and 49 < hit["expected"] < 55
    assert "scores" not in body


async def test_anomaly_defaults_to_robust_at_the_calibrated_threshold(client: Any) -> None:
    body = await (await client.post("/ai/anomaly", json={
        "metric_name": "latency", "data_points": series(spike_at=None)})).json()
    assert body == {"anomalies": [], "method": "robust", "threshold": 0.75, "count": 0,
                    "ongoing": None}


async def test_ongoing_names_the_anomaly_the_last_point_is_still_in(client: Any) -> None:
    # Latency steps from ~52 to ~202 at minute 100. Five minutes later the series is still
    # off what the detector expects: the step is ongoing (reported once, at minute 100);
    # long after, the new level is the expectation and nothing is ongoing.
    points = [{**p, "value": p["value"] + 150.0 * (i >= 100)}
              for i, p in enumerate(series(n=300, spike_at=None))]
    during = await (await client.post("/ai/anomaly", json={
        "metric_name": "latency", "data_points": points[:105]})).json()
    assert during["count"] == 1 and during["ongoing"] == during["anomalies"][0]
    assert during["ongoing"]["timestamp"] == (START + timedelta(minutes=100)).isoformat()
    after = await (await client.post("/ai/anomaly", json={
        "metric_name": "latency", "data_points": points})).json()
    assert after["anomalies"][0] == during["anomalies"][0] and after["ongoing"] is None


async def test_scores_come_one_per_input_point_in_input_order(client: Any) -> None:
    body = await (await client.post("/ai/anomaly", json={
        "metric_name": "latency", "data_points": series(), "include_scores": True,
        "threshold": 0.2})).json()
    scores = body["scores"]
    assert len(scores) == 120 and all(0 <= s <= 1 for s in scores)
    assert not any(scores[:20])  # warming up
    assert max(range(120), key=scores.__getitem__) == 100
    assert [a["score"] for a in body["anomalies"]] == [s for s in scores if s >= 0.2]


async def test_duplicate_timestamps_are_averaged(client: Any) -> None:
    points = series()
    twice = {**points[100], "value": 50.0}  # the same minute again: (400 + 50) / 2
    body = await (await client.post("/ai/anomaly", json={
        "metric_name": "latency", "data_points": [*points[:101], twice, *points[101:]],
        "include_scores": True})).json()
    (hit,) = body["anomalies"]
    assert hit["timestamp"] == points[100]["timestamp"] and hit["value"] == 225.0
    assert len(body["scores"]) == 121 and body["scores"][100] == body["scores"][101] > 0


async def test_cluster_groups_and_reports_levels_samples_members(client: Any) -> None:
    logs = [{"message": f"user {i} logged in from 10.0.0.{i}", "level": "info"}
            for i in range(8)]
    logs += [{"message": f"disk /dev/sd{c} is full", "level": "ERROR"} for c in "abc"]
    logs.append({"message": "user 99 logged in from 10.0.0.99"})
    response = await client.post("/ai/cluster", json={"logs": logs, "include_members": True})
    assert response.status == 200
    first, second = (await response.json())["clusters"]
    assert first["pattern"] == "user <*> logged in from <*>" and first["count"] == 9
    assert first["levels"] == {"INFO": 8, "UNKNOWN": 1}
    assert len(first["samples"]) == 5 and first["members"] == [*range(8), 11]
    assert second == {"pattern": "disk <*> is full", "count": 3, "levels": {"ERROR": 3},
                      "samples": [f"disk /dev/sd{c} is full" for c in "abc"],
                      "members": [8, 9, 10]}


async def test_cluster_leaves_members_out_unless_asked(client: Any) -> None:
    body = await (await client.post("/ai/cluster", json={"logs": [{"message": "a b"}]})).json()
    assert "members" not in body["clusters"][0]


async def test_healthz_and_metrics(client: Any) -> None:
    assert (await (await client.get("/healthz")).json()) == {"status": "ok"}
    await client.post("/ai/cluster", data=b"{")
    text = await (await client.get("/metrics")).text()
    assert 'opspilot_ai_requests_total{method="POST",route="/ai/cluster",status="400"} 1.0' in text
    assert "opspilot_ai_request_duration_seconds_bucket" in text


def with_point(**changes: Any) -> dict[str, Any]:
    points = series(20, None)
    points[3] = {**points[3], **changes}
    return {"metric_name": "m", "data_points": points}


def raw_value(token: bytes) -> bytes:
    doc = orjson.dumps(with_point(value=0.0))
    return doc.replace(b'"value":0.0', b'"value":' + token, 1)


BAD_ANOMALY = [
    (b"{not json", 400, "body"),
    (b"", 400, "body"),
    (b"[]", 400, "body"),
    ({"data_points": series(20, None)}, 400, "metric_name"),
    ({"metric_name": "m"}, 400, "data_points"),
    ({"metric_name": "m", "data_points": "many"}, 400, "data_points"),
    (with_point(timestamp="2024-13-01T00:00:00Z"), 400, "data_points[3].timestamp"),
    (with_point(timestamp="2024-03-01T00:03:00"), 400, "data_points[3].timestamp"),
    (with_point(timestamp=1709251380), 400, "data_points[3].timestamp"),
    (with_point(timestamp=None), 400, "data_points[3].timestamp"),
    (raw_value(b"NaN"), 400, "data_points[3].value"),
    (raw_value(b"Infinity"), 400, "data_points[3].value"),
    (raw_value(b"1e999"), 400, "data_points[3].value"),
    (with_point(value="12"), 400, "data_points[3].value"),
    (with_point(extra=1), 400, "data_points[3].extra"),
    ({**with_point(), "method": "median"}, 400, "method"),
    ({**with_point(), "threshold": 0}, 400, "threshold"),
    ({**with_point(), "threshold": 1.5}, 400, "threshold"),
    ({**with_point(), "threshold": "0.5"}, 400, "threshold"),
    ({**with_point(), "method": "z-score"}, 400, "method"),
    ({**with_point(), "method": "isolation_forest"}, 400, "method"),
    ({**with_point(), "include_scores": "yes"}, 400, "include_scores"),
    ({"metric_name": "m", "data_points": series(5, None)}, 400, "data_points"),
    ({"metric_name": "m", "data_points": series(20, None)[::-1]}, 400, "data_points"),
    ({"metric_name": "m", "data_points": series(20, None) + series(1, None)}, 400,
     "data_points"),
    ({"metric_name": "m", "data_points": series(501, None)}, 400, "data_points"),
    ({"metric_name": "m", "data_points": series(40, None), "pad": "x" * 300_000}, 413,
     "body"),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD_ANOMALY)
async def test_bad_anomaly_requests(client: Any, body: Any, status: int, field: str) -> None:
    await _expect_error(client, "/ai/anomaly", body, status, field)


BAD_CLUSTER = [
    ({}, 400, "logs"),
    ({"logs": [{"level": "INFO"}]}, 400, "logs[0].message"),
    ({"logs": [{"message": 5}]}, 400, "logs[0].message"),
    ({"logs": [{"message": "x" * 65_537}]}, 400, "logs[0].message"),
    ({"logs": [{"message": "a", "level": "L" * 33}]}, 400, "logs[0].level"),
    ({"logs": [], "include_members": "yes"}, 400, "include_members"),
    ({"logs": [{"message": "a"}] * 51}, 400, "logs"),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD_CLUSTER)
async def test_bad_cluster_requests(client: Any, body: Any, status: int, field: str) -> None:
    await _expect_error(client, "/ai/cluster", body, status, field)


async def _expect_error(client: Any, path: str, body: Any, status: int, field: str) -> None:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    response = await client.post(path, data=data, headers={"Content-Type": "application/json"})
    assert response.status == status, await response.text()
    error = (await response.json())["error"]
    assert error["details"]["field"] == field
    assert error["code"] in ("invalid_input", "limit_exceeded", "body_too_large")
    assert error["message"]


async def test_counts_over_the_cap_are_limit_errors(client: Any) -> None:
    response = await client.post("/ai/cluster", json={"logs": [{"message": "a"}] * 51})
    assert (await response.json())["error"]["code"] == "limit_exceeded"


async def test_unknown_routes_and_methods_are_json_errors(client: Any) -> None:
    for response in (await client.get("/ai/nothing"), await client.get("/ai/anomaly")):
        assert response.status in (404, 405)
        assert "error" in await response.json()


async def test_a_big_body_is_validated_in_a_worker_thread(aiohttp_client: Any) -> None:
    client = await aiohttp_client(create_ai_app(InProcessAnalyzer()))
    points = series(30_000, spike_at=29_000)  # ~1.6 MB: over the inline limit
    body = orjson.dumps({"metric_name": "latency", "data_points": points})
    assert len(body) > 1024 * 1024
    response = await client.post("/ai/anomaly", data=body)
    assert response.status == 200
    stamps = [a["timestamp"] for a in (await response.json())["anomalies"]]
    assert (START + timedelta(minutes=29_000)).isoformat() in stamps
    bad = body.replace(b'"value":52.0', b'"value":"52"', 1)
    error = (await (await client.post("/ai/anomaly", data=bad)).json())["error"]
    assert error["details"]["field"].endswith(".value")
