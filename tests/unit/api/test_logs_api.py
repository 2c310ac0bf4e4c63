"""Logs viewer endpoints over the in-memory store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.unit.conftest import drain

START = datetime(2024, 3, 1, 11, 0, tzinfo=UTC)


async def _ingest(api: Any, tenant: Any, container: Any, logs: list[dict[str, Any]]) -> str:
    response = await api.post("/api/ingest/logs", json={"logs": logs},
                              headers=tenant.ingest_headers)
    assert response.status == 202, await response.text()
    await drain(container)
    return str((await response.json())["batch_id"])


def _log(i: int, level: str = "INFO", message: str | None = None, service: str = "api",
         **extra: Any) -> dict[str, Any]:
    stamp = START + timedelta(seconds=i)
    return {"level": level, "message": message or f"request {i} served", "service": service,
            "timestamp": stamp.isoformat(), **extra}


async def test_search_filters_and_orders(api: Any, tenant: Any, container: Any) -> None:
    logs = [_log(i) for i in range(10)]
    logs += [_log(20, "ERROR", "Database connection failed", trace_id="t-1"),
             _log(21, "ERROR", "database timeout on orders", service="web"),
             _log(22, "WARN", "slow database query")]
    await _ingest(api, tenant, container, logs)
    url = "/api/logs/query?start_time=2024-03-01T11:00:00Z&end_time=2024-03-01T12:00:00Z"
    h = tenant.query_headers
    body = await (await api.get(url + "&search=database", headers=h)).json()
    assert [e["message"] for e in body["logs"]] == [
        "slow database query", "database timeout on orders", "Database connection failed"]
    body = await (await api.get(url + "&search=database&level=ERROR&service_name=api",
                                headers=h)).json()
    assert [e["trace_id"] for e in body["logs"]] == ["t-1"]
    body = await (await api.get(url + "&trace_id=t-1", headers=h)).json()
    assert body["total"] == 1
    body = await (await api.get(url + '&search="connection failed"', headers=h)).json()
    assert body["total"] == 1
    body = await (await api.get(url + "&search=database -timeout&level=ERROR,WARN", headers=h)).json()
    assert body["total"] == 2


async def test_user_text_is_never_query_syntax(api: Any, tenant: Any, container: Any) -> None:
    await _ingest(api, tenant, container, [_log(1, message="a OR b AND (c:d)")])
    url = "/api/logs/query?start_time=2024-03-01T11:00:00Z&search=" + "(c:d) AND *:*"
    response = await api.get(url, headers=tenant.query_headers)
    assert response.status == 200


async def test_offset_and_cursor_pages_have_no_gaps(api: Any, tenant: Any, container: Any) -> None:
    same_second = [{**_log(0), "message": f"tick {i}"} for i in range(25)]
    batch = await _ingest(api, tenant, container, same_second + [_log(i) for i in range(1, 40)])
    base = "/api/logs/query?start_time=2024-03-01T11:00:00Z&limit=7"
    seen: list[str] = []
    cursor = None
    while True:
        url = base + (f"&cursor={cursor}" if cursor else "")
        body = await (await api.get(url, headers=tenant.query_headers)).json()
        seen += [e["id"] for e in body["logs"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 64
    offset_page = await (await api.get(base + "&offset=7", headers=tenant.query_headers)).json()
    assert [e["id"] for e in offset_page["logs"]] == seen[7:14]
    assert all(i.startswith(batch) for i in seen)


async def test_context_is_exact_at_equal_timestamps(api: Any, tenant: Any, container: Any) -> None:
    logs = [{**_log(0), "message": f"same {i}"} for i in range(30)]
    logs.append(_log(0, service="other"))
    batch = await _ingest(api, tenant, container, logs)
    anchor = f"{batch}-00015"
    body = await (await api.get(f"/api/logs/{anchor}/context", headers=tenant.query_headers)).json()
    assert body["log"]["message"] == "same 15"
    assert [e["message"] for e in body["before"]] == [f"same {i}" for i in range(5, 15)]
    assert [e["message"] for e in body["after"]] == [f"same {i}" for i in range(16, 26)]
    narrow = await api.get(f"/api/logs/{anchor}/context?before=2&after=1",
                           headers=tenant.query_headers)
    assert len((await narrow.json())["before"]) == 2
    # scope=project: the other service's log (id 30, after every "same" one) is a neighbour
    last = f"{batch}-00029"
    wide = await (await api.get(f"/api/logs/{last}/context?scope=project",
                                headers=tenant.query_headers)).json()
    assert [e["service_name"] for e in wide["after"]] == ["other"]
    alone = await (await api.get(f"/api/logs/{last}/context", headers=tenant.query_headers)).json()
    assert alone["after"] == []
    bad = await api.get(f"/api/logs/{last}/context?scope=everything", headers=tenant.query_headers)
    assert bad.status == 400 and (await bad.json())["error"]["details"]["field"] == "scope"


async def test_unknown_log_is_404(api: Any, tenant: Any) -> None:
    response = await api.get("/api/logs/nope-00001/context", headers=tenant.query_headers)
    assert response.status == 404
    assert (await response.json())["error"]["details"]["field"] == "log_id"


async def test_volume_follows_the_search_and_the_trace(api: Any, tenant: Any,
                                                        container: Any) -> None:
    await _ingest(api, tenant, container, [_log(5, message="disk full", trace_id="t-7"),
                                           _log(6), _log(70, message="disk full")])
    url = ("/api/logs/volume?start_time=2024-03-01T11:00:00Z&end_time=2024-03-01T11:02:00Z"
           "&time_bucket=1m")
    counts = [b["count"] for b in (await (await api.get(f"{url}&search=disk",
                                                          headers=tenant.query_headers)).json())["buckets"]]
    assert counts == [1, 1]
    traced = await (await api.get(f"{url}&trace_id=t-7", headers=tenant.query_headers)).json()
    assert traced["total"] == 1


async def test_volume_has_zero_buckets(api: Any, tenant: Any, container: Any) -> None:
    await _ingest(api, tenant, container, [_log(5), _log(10, "ERROR"), _log(200)])
    url = ("/api/logs/volume?start_time=2024-03-01T11:00:00Z&end_time=2024-03-01T11:05:00Z"
           "&time_bucket=1m")
    body = await (await api.get(url, headers=tenant.query_headers)).json()
    assert [b["count"] for b in body["buckets"]] == [2, 0, 0, 1, 0]
    errors = await (await api.get(url + "&level=ERROR", headers=tenant.query_headers)).json()
    assert [b["count"] for b in errors["buckets"]] == [1, 0, 0, 0, 0]


async def test_error_spikes_are_flagged_with_their_method(
    api: Any, tenant: Any, container: Any
) -> None:
    logs = [_log(60 * minute + 1, "ERROR") for minute in range(20)]  # one per minute
    logs += [_log(60 * 15 + s, "ERROR", "boom") for s in range(2, 14)]  # a burst in minute 15
    await _ingest(api, tenant, container, logs)
    url = ("/api/logs/error-spikes?start_time=2024-03-01T11:00:00Z"
           "&end_time=2024-03-01T11:20:00Z")
    body = await (await api.get(url, headers=tenant.query_headers)).json()
    flagged = [b["timestamp"] for b in body["buckets"] if b["spike"]]
    assert flagged == ["2024-03-01T11:15:00+00:00"]
    assert "median" in body["method"]


async def test_patterns_group_similar_logs(api: Any, tenant: Any, container: Any) -> None:
    logs = [_log(i, message=f"user {i} logged in from 10.0.0.{i}") for i in range(30)]
    logs += [_log(40 + i, "ERROR", f"disk /dev/sd{chr(97 + i)} is full") for i in range(5)]
    await _ingest(api, tenant, container, logs)
    body = await (await api.get("/api/logs/patterns?start_time=2024-03-01T11:00:00Z",
                                headers=tenant.query_headers)).json()
    counts = sorted(p["count"] for p in body["patterns"])
    assert counts == [5, 30]
    assert body["logs_analyzed"] == 35


@pytest.mark.parametrize(("query", "field"), [
    ("level=LOUD", "level"), ("limit=0", "limit"), ("limit=5000", "limit"),
    ("offset=-1", "offset"), ("offset=9950&limit=100", "offset"), ("cursor=garbage!", "cursor"),
    ("time_bucket=1x", "time_bucket"),
])
async def test_bad_log_queries(api: Any, tenant: Any, query: str, field: str) -> None:
    endpoint = "volume" if "time_bucket" in query else "query"
    response = await api.get(f"/api/logs/{endpoint}?{query}", headers=tenant.query_headers)
    assert response.status == 400, await response.text()
    assert (await response.json())["error"]["details"]["field"] == field
