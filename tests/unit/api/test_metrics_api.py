"""Metrics explorer endpoints over the in-memory store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.unit.conftest import drain

START = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)


def _points(name: str, service: str, values: list[float], step_s: int = 30) -> list[dict[str, Any]]:
    return [
        {"name": name, "value": v, "service": service,
         "timestamp": (START + timedelta(seconds=i * step_s)).isoformat(),
         "tags": {"region": "eu" if i % 2 == 0 else "us"}}
        for i, v in enumerate(values)
    ]


@pytest.fixture
async def loaded(api: Any, tenant: Any, container: Any) -> Any:
    batch = _points("latency", "api", [float(v) for v in range(1, 13)])  # 6 minutes, 2/min
    batch += _points("errors", "api", [0.0, 1.0] * 6)
    batch += _points("latency", "web", [100.0] * 12)
    response = await api.post("/api/ingest/metrics", json={"metrics": batch},
                              headers=tenant.ingest_headers)
    assert response.status == 202
    await drain(container)
    return tenant


WINDOW = "start_time=2024-03-01T10:00:00Z&end_time=2024-03-01T10:06:00Z"


async def test_bucketed_average(api: Any, loaded: Any) -> None:
    response = await api.get(
        f"/api/metrics/query?metric_name=latency&service_name=api&{WINDOW}&time_bucket=1m",
        headers=loaded.query_headers,
    )
    assert response.status == 200
    body = await response.json()
    assert [p["value"] for p in body["points"]] == [1.5, 3.5, 5.5, 7.5, 9.5, 11.5]
    assert body["points"][0]["timestamp"] == "2024-03-01T10:00:00+00:00"
    assert body["aggregation"] == "avg" and body["time_bucket"] == "1m"


@pytest.mark.parametrize(("aggregation", "expected"), [
    ("sum", [3.0, 7.0, 11.0, 15.0, 19.0, 23.0]),
    ("max", [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]),
    ("min", [1.0, 3.0, 5.0, 7.0, 9.0, 11.0]),
    ("count", [2.0] * 6),
    ("p50", [1.5, 3.5, 5.5, 7.5, 9.5, 11.5]),
])
async def test_aggregations(api: Any, loaded: Any, aggregation: str, expected: list[float]) -> None:
    response = await api.get(
        f"/api/metrics/query?metric_name=latency&service_name=api&{WINDOW}"
        f"&aggregation={aggregation}",
        headers=loaded.query_headers,
    )
    assert [p["value"] for p in (await response.json())["points"]] == expected


async def test_p95_over_one_bucket_interpolates(api: Any, loaded: Any) -> None:
    response = await api.get(
        f"/api/metrics/query?metric_name=latency&service_name=api&{WINDOW}"
        "&aggregation=p95&time_bucket=1h",
        headers=loaded.query_headers,
    )
    (point,) = (await response.json())["points"]
    assert point["value"] == pytest.approx(1 + 0.95 * 11)


async def test_tag_filter(api: Any, loaded: Any) -> None:
    response = await api.get(
        f"/api/metrics/query?metric_name=latency&service_name=api&{WINDOW}"
        "&aggregation=count&time_bucket=1h&tags=region:eu",
        headers=loaded.query_headers,
    )
    assert [p["value"] for p in (await response.json())["points"]] == [6.0]


async def test_overlay_keeps_order(api: Any, loaded: Any) -> None:
    body = {"metrics": [{"name": "errors", "service": "api"}, {"name": "latency", "service": "web"}],
            "start_time": "2024-03-01T10:00:00Z", "end_time": "2024-03-01T10:06:00Z",
            "time_bucket": "3m"}
    response = await api.post("/api/metrics/query-multiple", json=body,
                              headers=loaded.query_headers)
    series = (await response.json())["series"]
    assert [s["metric_name"] for s in series] == ["errors", "latency"]
    assert [p["value"] for p in series[0]["points"]] == [0.5, 0.5]
    assert [p["value"] for p in series[1]["points"]] == [100.0, 100.0]


async def test_histogram(api: Any, loaded: Any) -> None:
    response = await api.get(
        f"/api/metrics/histogram?metric_name=latency&service_name=api&{WINDOW}&bins=4",
        headers=loaded.query_headers,
    )
    body = await response.json()
    assert [b["count"] for b in body["bins"]] == [3, 3, 3, 3]
    assert body["total"] == 12 and body["min"] == 1.0 and body["max"] == 12.0


async def test_cached_answer_is_identical(api: Any, loaded: Any, container: Any) -> None:
    url = f"/api/metrics/query?metric_name=latency&service_name=api&{WINDOW}"
    first = await (await api.get(url, headers=loaded.query_headers)).read()
    second = await (await api.get(url, headers=loaded.query_headers)).read()
    assert first == second
    lookups = container.api_telemetry().cache_lookups
    assert lookups.labels("series", "hit")._value.get() == 1


async def test_anomalies_flag_the_spike(api: Any, tenant: Any, container: Any) -> None:
    values = [50.0 + (i % 5) for i in range(120)]
    values[100] = 400.0
    batch = _points("latency", "api", values, step_s=60)
    await api.post("/api/ingest/metrics", json={"metrics": batch}, headers=tenant.ingest_headers)
    await drain(container)
    response = await api.get(
        "/api/metrics/anomalies?metric_name=latency&service_name=api"
        "&start_time=2024-03-01T10:00:00Z&end_time=2024-03-01T12:00:00Z",
        headers=tenant.query_headers,
    )
    assert response.status == 200
    body = await response.json()
    (hit,) = body["anomalies"]
    assert hit["timestamp"] == (START + timedelta(minutes=100)).isoformat()
    assert body["method"] == "robust" and body["threshold"] == 0.75 <= hit["score"] <= 1
    assert body["points"] == 120


BAD_QUERIES = [
    ("metric_name=latency&aggregation=median", "aggregation"),
    ("metric_name=latency&time_bucket=7x", "time_bucket"),
    ("metric_name=latency&start_time=2024-03-01T11:00:00Z&end_time=2024-03-01T10:00:00Z",
     "end_time"),
    ("metric_name=latency&start_time=2023-01-01T00:00:00Z&end_time=2024-03-01T00:00:00Z",
     "end_time"),
    ("metric_name=latency&start_time=2024-03-01T00:00:00Z&end_time=2024-03-20T00:00:00Z"
     "&time_bucket=1s", "time_bucket"),
    ("metric_name=latency&start_time=2024-03-01T10:00:00", "start_time"),
    ("service_name=api", "metric_name"),
    ("metric_name=latency&tags=novalue", "tags"),
]


@pytest.mark.parametrize(("query", "field"), BAD_QUERIES)
async def test_bad_queries_name_the_field(api: Any, tenant: Any, query: str, field: str) -> None:
    response = await api.get(f"/api/metrics/query?{query}", headers=tenant.query_headers)
    assert response.status == 400, await response.text()
    assert (await response.json())["error"]["details"]["field"] == field


@pytest.mark.parametrize(("query", "field"), [
    ("metric_name=latency&bins=0", "bins"), ("metric_name=latency&bins=5000", "bins"),
])
async def test_bad_histogram_bins(api: Any, tenant: Any, query: str, field: str) -> None:
    response = await api.get(f"/api/metrics/histogram?{query}", headers=tenant.query_headers)
    assert response.status == 400
    assert (await response.json())["error"]["details"]["field"] == field


async def test_overlay_bad_aggregation_names_its_position(api: Any, tenant: Any) -> None:
    body = {"metrics": [{"name": "a"}, {"name": "b", "aggregation": "mode"}],
            "start_time": "2024-03-01T10:00:00Z", "end_time": "2024-03-01T11:00:00Z"}
    response = await api.post("/api/metrics/query-multiple", json=body,
                              headers=tenant.query_headers)
    assert (await response.json())["error"]["details"]["field"] == "metrics[1].aggregation"


async def test_bad_threshold(api: Any, tenant: Any) -> None:
    response = await api.get("/api/metrics/anomalies?metric_name=x&threshold=-1",
                             headers=tenant.query_headers)
    assert (await response.json())["error"]["details"]["field"] == "threshold"


async def test_late_data_replaces_a_cached_past_window(api: Any, loaded: Any,
                                                       container: Any) -> None:
    """The window ended ~2 h before the clock's now, so it is cached for an hour; a point
    that arrives for it afterwards must show at once, not when the entry expires."""
    url = f"/api/metrics/query?metric_name=latency&service_name=api&{WINDOW}&aggregation=count"
    before = await (await api.get(url, headers=loaded.query_headers)).json()
    assert [p["value"] for p in before["points"]] == [2.0] * 6

    late = _points("latency", "api", [50.0], step_s=0)  # at 10:00, two hours late
    response = await api.post("/api/ingest/metrics", json={"metrics": late},
                              headers=loaded.ingest_headers)
    assert response.status == 202
    await drain(container)

    after = await (await api.get(url, headers=loaded.query_headers)).json()
    assert [p["value"] for p in after["points"]] == [3.0] + [2.0] * 5
