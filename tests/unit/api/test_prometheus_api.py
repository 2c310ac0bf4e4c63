"""The Prometheus HTTP API on in-memory adapters: envelope, GET and form POST, tenancy (X-Project-ID
and X-Scope-OrgID), the subset's refusals and the limits. The answers' PromQL semantics are
checked against a real Prometheus in tests/integration/test_promql_differential.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from opspilot.container import Container
from opspilot.domain.ingest import MetricBatch
from opspilot.domain.metrics import MetricPoint
from tests.unit.conftest import NOW, Tenant

T = NOW - timedelta(minutes=30)
AT = str((T + timedelta(minutes=10)).timestamp())


async def _load(container: Container, tenant: Tenant, name: str = "req_total") -> None:
    points = [MetricPoint(tenant.project_id, T + timedelta(seconds=15 * i), name, float(i * 10),
                          svc, {"code": "200"})
              for i in range(80) for svc in ("api", "db")]
    await container.metric_store().write_batches([MetricBatch(f"m-{name}", tenant.project_id,
                                                              T, points)])


async def _json(response: Any) -> Any:
    return await response.json()


async def test_instant_query_by_get_and_by_form_post(api: Any, container: Container,
                                                     tenant: Tenant) -> None:
    await _load(container, tenant)
    params = {"query": 'sum by (service) (rate(req_total{code="200"}[5m]))', "time": AT}
    got = await api.get("/api/v1/query", params=params, headers=tenant.query_headers)
    posted = await api.post("/api/v1/query", data=params, headers=tenant.query_headers)
    assert got.status == posted.status == 200
    body = await _json(got)
    assert body == await _json(posted)
    assert body["status"] == "success"
    assert body["data"]["resultType"] == "vector"
    assert [r["metric"] for r in body["data"]["result"]] == [{"service": "api"},
                                                              {"service": "db"}]
    assert all(float(r["value"][1]) == pytest.approx(10 / 15) for r in body["data"]["result"])


async def test_range_query_steps_and_matrix(api: Any, container: Container,
                                            tenant: Tenant) -> None:
    await _load(container, tenant)
    start = T.timestamp() + 60
    params = {"query": 'req_total{service="api"}', "start": str(start),
              "end": str(start + 120), "step": "1m"}
    body = await _json(await api.get("/api/v1/query_range", params=params,
                                     headers=tenant.query_headers))
    [series] = body["data"]["result"]
    assert series["metric"] == {"__name__": "req_total", "code": "200", "service": "api"}
    assert series["values"] == [[start, "40"], [start + 60, "80"], [start + 120, "120"]]


async def test_series_labels_values_metadata_buildinfo(api: Any, container: Container,
                                                       tenant: Tenant) -> None:
    await _load(container, tenant)
    h = tenant.query_headers
    series = await _json(await api.get("/api/v1/series", params={"match[]": '{service="db"}'},
                                       headers=h))
    assert series["data"] == [{"__name__": "req_total", "code": "200", "service": "db"}]
    labels = await _json(await api.post("/api/v1/labels", headers=h))
    assert labels["data"] == ["__name__", "code", "service"]
    values = await _json(await api.get("/api/v1/label/service/values", headers=h))
    assert values["data"] == ["api", "db"]
    meta = await _json(await api.get("/api/v1/metadata", headers=h))
    # nothing said about it: a counter by its name (tests/unit/api/test_prometheus_metadata.py)
    assert meta["data"] == {"req_total": [{"type": "counter", "help": "", "unit": ""}]}
    info = await _json(await api.get("/api/v1/status/buildinfo", headers=h))
    assert info["data"]["version"] == "2.42.0"


async def test_unsupported_function_is_bad_data_naming_it(api: Any, container: Container,
                                                          tenant: Tenant) -> None:
    for query, named in [("deriv(req_total[5m])", "deriv"), ("stddev(req_total)", "stddev"),
                         ("req_total and req_total", "and"), ("req_total[5m:1m]", "subquery"),
                         ("req_total @ 100", "@")]:
        response = await api.get("/api/v1/query", params={"query": query},
                                 headers=tenant.query_headers)
        body = await _json(response)
        assert response.status == 400, query
        assert body["status"] == "error" and body["errorType"] == "bad_data"
        assert named in body["error"], body


@pytest.mark.parametrize("params, field", [
    ({"query": "sum("}, "query"),
    ({"query": "up", "time": "yesterday"}, "time"),
    ({"query": "up", "start": "0", "end": "10", "step": "0"}, "step"),
    ({"query": "up", "start": "0", "end": "100000", "step": "1"}, "step"),
    ({"start": "0", "end": "10", "step": "1"}, "query"),
    ({"query": 'up{job="a\x00b"}'}, "query"),
])
async def test_bad_parameters_are_bad_data(api: Any, tenant: Tenant, params: dict[str, str],
                                           field: str) -> None:
    path = "/api/v1/query_range" if "step" in params else "/api/v1/query"
    response = await api.get(path, params=params, headers=tenant.query_headers)
    body = await _json(response)
    assert response.status == 400
    assert (body["errorType"], body["details"]["field"]) == ("bad_data", field)


async def test_execution_errors_are_422(api: Any, container: Container, tenant: Tenant) -> None:
    await _load(container, tenant)
    response = await api.get("/api/v1/query", params={"query": "req_total + on(code) req_total",
                                                      "time": AT}, headers=tenant.query_headers)
    body = await _json(response)
    assert response.status == 422 and body["errorType"] == "execution"
    assert "many-to-many" in body["error"]


async def test_too_many_samples_is_refused(api: Any, container: Container,
                                           tenant: Tenant) -> None:
    await _load(container, tenant)
    container.prometheus_queries()._limits = type(container.promql_limits())(max_samples=50)
    response = await api.get("/api/v1/query", params={"query": "req_total[1h]", "time": AT},
                             headers=tenant.query_headers)
    body = await _json(response)
    assert response.status == 422 and "too many samples" in body["error"]


async def test_tenancy_cannot_be_crossed(api: Any, container: Container, tenant: Tenant,
                                         other_tenant: Tenant) -> None:
    await _load(container, tenant)
    theirs = {"Authorization": f"Bearer {other_tenant.token}"}
    for header in ("X-Project-ID", "X-Scope-OrgID"):
        response = await api.get("/api/v1/query", params={"query": "req_total", "time": AT},
                                 headers={**theirs, header: tenant.project_id})
        assert response.status == 403
        assert (await _json(response))["errorType"] == "forbidden"
    own = {**theirs, "X-Scope-OrgID": other_tenant.project_id}
    body = await _json(await api.get("/api/v1/query", params={"query": "req_total", "time": AT},
                                     headers=own))
    assert body == {"status": "success", "data": {"resultType": "vector", "result": []}}
    mixed = {**own, "X-Project-ID": tenant.project_id}
    response = await api.get("/api/v1/labels", headers=mixed)
    assert response.status == 400
    missing = await api.get("/api/v1/labels", headers={"X-Project-ID": tenant.project_id})
    assert missing.status == 401
    assert (await _json(missing))["errorType"] == "unauthorized"


async def test_x_scope_orgid_alone_names_the_project(api: Any, container: Container,
                                                     tenant: Tenant) -> None:
    await _load(container, tenant)
    headers = {"Authorization": f"Bearer {tenant.token}", "X-Scope-OrgID": tenant.project_id}
    body = await _json(await api.get("/api/v1/label/__name__/values", headers=headers))
    assert body["data"] == ["req_total"]


# -- query options: lookback_delta, stats, timeout ----------------------------------------------


async def test_lookback_delta_changes_how_far_an_instant_selector_looks_back(
        api: Any, container: Container, tenant: Tenant) -> None:
    await _load(container, tenant)
    last = T + timedelta(seconds=15 * 79)
    params = {"query": 'req_total{service="api"}', "time": str((last + timedelta(minutes=2))
                                                               .timestamp())}
    h = tenant.query_headers
    default = await _json(await api.get("/api/v1/query", params=params, headers=h))
    assert [r["value"][1] for r in default["data"]["result"]] == ["790"]
    for lookback, found in (("1m", []), ("90", []), ("121s", ["790"]), ("0", ["790"])):
        body = await _json(await api.post("/api/v1/query", data={**params,
                                                                 "lookback_delta": lookback},
                                          headers=h))
        assert [r["value"][1] for r in body["data"]["result"]] == found, lookback
    bad = await api.get("/api/v1/query", params={**params, "lookback_delta": "soon"}, headers=h)
    assert bad.status == 400
    assert (await _json(bad))["details"]["field"] == "lookback_delta"


async def test_stats_report_timings_and_samples_per_step(api: Any, container: Container,
                                                         tenant: Tenant) -> None:
    await _load(container, tenant)
    start = T.timestamp() + 300
    params = {"query": "sum(rate(req_total[1m]))", "start": str(start), "end": str(start + 60),
              "step": "30"}
    h = tenant.query_headers
    plain = await _json(await api.get("/api/v1/query_range", params=params, headers=h))
    assert "stats" not in plain["data"]
    every = await _json(await api.get("/api/v1/query_range", params={**params, "stats": "all"},
                                      headers=h))
    stats = every["data"]["stats"]
    assert set(stats["timings"]) == {"evalTotalTime", "resultSortTime", "queryPreparationTime",
                                     "innerEvalTime", "execQueueTime", "execTotalTime"}
    assert all(isinstance(v, float) and v >= 0 for v in stats["timings"].values())
    # 2 series, 15 s samples: a closed 1 m window holds 5 samples of each at every step
    per_step = [[start, 10], [start + 30, 10], [start + 60, 10]]
    assert stats["samples"] == {"totalQueryableSamples": 30, "peakSamples": 10,
                                "totalQueryableSamplesPerStep": per_step}
    some = await _json(await api.get("/api/v1/query_range", params={**params, "stats": "1"},
                                     headers=h))
    assert "totalQueryableSamplesPerStep" not in some["data"]["stats"]["samples"]
    assert some["data"]["result"] == every["data"]["result"] == plain["data"]["result"]


async def test_a_spent_timeout_is_prometheus_timeout_error(api: Any, container: Container,
                                                           tenant: Tenant) -> None:
    await _load(container, tenant)
    h = tenant.query_headers
    for timeout in ("0", "-1"):
        response = await api.get("/api/v1/query", params={"query": "req_total", "time": AT,
                                                          "timeout": timeout}, headers=h)
        body = await _json(response)
        assert response.status == 503, timeout
        assert (body["status"], body["errorType"]) == ("error", "timeout")
        assert body["error"].startswith("query timed out in")
    ok = await api.get("/api/v1/query", params={"query": "req_total", "time": AT,
                                                "timeout": "1m"}, headers=h)
    assert ok.status == 200
    bad = await api.get("/api/v1/query", params={"query": "req_total", "timeout": "x"}, headers=h)
    assert bad.status == 400 and (await _json(bad))["details"]["field"] == "timeout"
