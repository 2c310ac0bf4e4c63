"""Each defect the schemathesis fuzzing found, pinned as a plain example."""

from __future__ import annotations

from typing import Any

import pytest


def _error(doc: Any) -> dict[str, Any]:
    assert set(doc) == {"error"}
    assert {"code", "message", "details"} <= set(doc["error"])
    return doc["error"]


@pytest.mark.parametrize("path", [
    "/api/logs/volume?end_time=0001-01-01T05:03:15.0%2B16:14",
    "/api/metrics/anomalies?metric_name=A&end_time=0001-01-01T02:40:00%2B00:00",
    "/api/metrics/histogram?metric_name=A&end_time=0001-01-01T00:30:00Z",
    "/api/metrics/query?metric_name=A&start_time=9999-12-31T23:00:00Z&end_time=9999-12-31T23:59:00Z",
])
async def test_timestamps_at_the_ends_of_the_calendar_are_400_not_500(
    api: Any, tenant: Any, path: str
) -> None:
    response = await api.get(path, headers=tenant.query_headers)
    assert response.status == 400
    error = _error(await response.json())
    assert error["details"]["field"] in ("start_time", "end_time")
    assert "from 1970-01-01T00:00:00+00:00 to before 5000-01-01" in error["message"]


@pytest.mark.parametrize("value", ["0.5", "1700000000"])
async def test_a_number_is_not_a_timestamp_in_a_query(api: Any, tenant: Any, value: str) -> None:
    response = await api.get(f"/api/logs/query?end_time={value}", headers=tenant.query_headers)
    assert response.status == 400
    assert _error(await response.json())["details"]["field"] == "end_time"


async def test_a_number_is_not_a_timestamp_in_a_body(api: Any, tenant: Any) -> None:
    response = await api.post(
        "/api/ingest/metrics", headers=tenant.ingest_headers,
        json={"metrics": [{"name": "A", "value": 0.0, "timestamp": 0}]},
    )
    assert response.status == 400
    assert _error(await response.json())["details"]["field"] == "metrics[0].timestamp"


@pytest.mark.parametrize(("field", "value"), [("threshold", False), ("enabled", 0)])
async def test_rule_fields_take_json_types_only(
    api: Any, tenant: Any, field: str, value: Any
) -> None:
    body = {"name": "r", "metric_name": "A", "threshold": 1.0, field: value}
    response = await api.post("/api/rules", json=body, headers=tenant.query_headers)
    assert response.status == 400
    assert _error(await response.json())["details"]["field"] == field


async def test_405_keeps_the_allow_header(api: Any) -> None:
    response = await api.request("TRACE", "/healthz")
    assert response.status == 405
    assert "GET" in response.headers["Allow"]
    assert _error(await response.json())["details"]["field"] == "method"


async def test_zero_durations_are_outside_the_documented_pattern(api: Any, tenant: Any) -> None:
    response = await api.get("/api/logs/volume?time_bucket=0m", headers=tenant.query_headers)
    assert response.status == 400
    assert _error(await response.json())["details"]["field"] == "time_bucket"


async def test_the_spec_documents_what_the_server_answers(api: Any) -> None:
    doc = await (await api.get("/api/openapi.json")).json()
    paths = doc["paths"]
    # a query parameter's enum is a shared component, not a dangling `#/$defs/...`
    status = next(p for p in paths["/api/incidents"]["get"]["parameters"] if p["name"] == "status")
    ref = status["schema"]["anyOf"][0]["$ref"]
    assert ref.startswith("#/components/schemas/")
    assert ref.rsplit("/", 1)[1] in doc["components"]["schemas"]
    # statuses the fuzzer saw undocumented
    assert "404" in paths["/api/rules/{rule_id}"]["get"]["responses"]
    assert "409" in paths["/api/admin/projects"]["post"]["responses"]
    assert "409" in paths["/api/channels/{channel_id}"]["delete"]["responses"]
    assert "413" in paths["/api/ingest/logs"]["post"]["responses"]
    assert "503" in paths["/readyz"]["get"]["responses"]
    # PATCH documents null only where the server takes it
    patch = doc["components"]["schemas"]["RulePatch"]["properties"]
    assert "null" not in str(patch["name"]) and "null" in str(patch["threshold"])
    assert patch["channels"]["maxItems"] == 10 and patch["tags"]["maxProperties"] == 32


async def test_patch_refuses_null_for_a_field_that_has_no_null(api: Any, tenant: Any) -> None:
    created = await api.post(
        "/api/rules", json={"name": "r", "metric_name": "A", "threshold": 1.0},
        headers=tenant.query_headers,
    )
    rule_id = (await created.json())["id"]
    response = await api.patch(
        f"/api/rules/{rule_id}", json={"aggregation": None}, headers=tenant.query_headers
    )
    assert response.status == 400
    assert _error(await response.json())["details"]["field"] == "aggregation"


@pytest.mark.parametrize("value", [1.7e308, -1.7e308, 1.0000001e150])
async def test_metric_values_beyond_the_bound_are_400_naming_the_item(
    api: Any, tenant: Any, value: float
) -> None:
    """Two such points made sum/avg overflow (500 from the in-memory store's fsum and from
    PostgreSQL's float8) and a histogram over them divide by infinity."""
    response = await api.post(
        "/api/ingest/metrics", headers=tenant.ingest_headers,
        json={"metrics": [{"name": "A", "value": 1.0, "timestamp": "2024-03-01T11:00:00Z"},
                          {"name": "A", "value": value, "timestamp": "2024-03-01T11:00:00Z"}]},
    )
    assert response.status == 400
    assert _error(await response.json())["details"]["field"] == "metrics[1].value"


async def test_aggregates_at_the_value_bound_answer(api: Any, tenant: Any, container: Any) -> None:
    from tests.unit.conftest import drain

    points = [{"name": "A", "value": v, "timestamp": "2024-03-01T11:00:00Z"}
              for v in (1e150, 1e150, -1e150)]
    response = await api.post("/api/ingest/metrics", headers=tenant.ingest_headers,
                              json={"metrics": points})
    assert response.status == 202
    await drain(container)
    window = "start_time=2024-03-01T10:00:00Z&end_time=2024-03-01T12:00:00Z"
    for path in (f"/api/metrics/query?metric_name=A&aggregation=sum&time_bucket=1h&{window}",
                 f"/api/metrics/histogram?metric_name=A&bins=10&{window}"):
        answer = await api.get(path, headers=tenant.query_headers)
        assert answer.status == 200, await answer.text()
    series = await (await api.get(
        f"/api/metrics/query?metric_name=A&aggregation=sum&time_bucket=1h&{window}",
        headers=tenant.query_headers)).json()
    assert series["points"][0]["value"] == pytest.approx(1e150)


# -- found by the live fuzzing on the real services (tests/integration/test_api_fuzz_live.py)


@pytest.mark.parametrize("email", ["a\u0000b@example.com", "a@exam\u0001ple.com", "a\x7f@b.c"])
async def test_an_e_mail_with_a_control_character_is_400_naming_it(
    api: Any, tenant: Any, email: str
) -> None:
    """PostgreSQL answered the NUL with an error the API turned into a 500; the schema now
    says what an address may hold, and the request is refused before any lookup."""
    response = await api.post(f"/api/projects/{tenant.project_id}/members",
                              json={"email": email, "role": "viewer"},
                              headers={"Authorization": tenant.query_headers["Authorization"]})
    assert response.status == 400
    assert _error(await response.json())["details"]["field"] == "email"


async def test_a_project_name_the_schema_admits_is_accepted(api: Any) -> None:
    """The name rule was a Python check the schema did not state: schema-valid names were
    refused. It is the names' pattern now (no control characters), so the schema says it."""
    from tests.unit.conftest import ADMIN_HEADERS

    doc = await (await api.get("/api/openapi.json")).json()
    pattern = doc["components"]["schemas"]["CreateProjectBody"]["properties"]["name"]["pattern"]
    import re

    for name in ("caf\u00e9 \U0001f600", "a\u00a0b"):  # printable, not ASCII
        assert re.match(pattern, name)
        response = await api.post("/api/admin/projects", json={"name": name},
                                  headers=ADMIN_HEADERS)
        assert response.status == 201, await response.text()
    for name in ("a\u0088b", "tab\there"):
        assert not re.match(pattern, name)
        response = await api.post("/api/admin/projects", json={"name": name},
                                  headers=ADMIN_HEADERS)
        assert response.status == 400
        assert _error(await response.json())["details"]["field"] == "name"


async def test_an_empty_rule_patch_is_outside_the_schema(api: Any, tenant: Any) -> None:
    doc = await (await api.get("/api/openapi.json")).json()
    assert doc["components"]["schemas"]["RulePatch"]["minProperties"] == 1
    response = await api.patch("/api/rules/x", json={}, headers=tenant.query_headers)
    assert response.status == 400


async def test_rules_the_schema_cannot_state_are_in_the_document(api: Any) -> None:
    doc = await (await api.get("/api/openapi.json")).json()
    query = doc["paths"]["/api/metrics/query"]["get"]
    assert "end_time after start_time" in query["description"]
    assert query["x-rules-beyond-schema"]
    assert "cursor" in " ".join(doc["paths"]["/api/logs/query"]["get"]["x-rules-beyond-schema"])
    assert "x-rules-beyond-schema" not in doc["paths"]["/api/channels/{channel_id}/test"]["post"]


@pytest.mark.parametrize("path", ["/v1/metrics", "/v1/logs"])
async def test_otlp_json_resources_must_be_objects(api: Any, tenant: Any, path: str) -> None:
    """A string where a ResourceMetrics/ResourceLogs object belongs was read as an empty
    message and answered 200 with nothing stored (a silent drop)."""
    field = "resourceMetrics" if path.endswith("metrics") else "resourceLogs"
    response = await api.post(path, json={field: ["x", ""]}, headers=tenant.ingest_headers)
    assert response.status == 400
    assert _error(await response.json())["details"]["field"] == f"{field}[0]"
    empty = await api.post(path, json={field: None}, headers=tenant.ingest_headers)
    assert empty.status == 200  # null is the field's default in protobuf's JSON mapping


async def test_a_whole_number_written_with_a_fraction_is_an_integer(api: Any, tenant: Any) -> None:
    """JSON Schema's `integer` admits 300.0; the strict model refused it. The bounds stay
    in the document (a first fix lost them: 0 was then schema-valid and refused)."""
    doc = await (await api.get("/api/openapi.json")).json()
    days = doc["components"]["schemas"]["RetentionBody"]["properties"]["values_days"]["anyOf"][0]
    assert days["minimum"] == 1 and "maximum" in days
    response = await api.patch(
        f"/api/projects/{tenant.project_id}", headers=tenant.query_headers,
        json={"metric_retention": {"values_days": 30.0, "summary_days": 60.0}})
    assert response.status == 200, await response.text()
    half = await api.patch(
        f"/api/projects/{tenant.project_id}", headers=tenant.query_headers,
        json={"metric_retention": {"values_days": 30.5}})
    assert half.status == 400


async def test_an_empty_prometheus_project_header_is_documented_as_absent(api: Any) -> None:
    doc = await (await api.get("/api/openapi.json")).json()
    # a form of only optional parameters may be left out, as the server reads it
    assert doc["paths"]["/api/v1/labels"]["post"]["requestBody"]["required"] is False
    assert doc["paths"]["/api/v1/query"]["post"]["requestBody"]["required"] is True
    for param in doc["paths"]["/api/v1/labels"]["get"]["parameters"]:
        if param["name"] in ("X-Project-ID", "X-Scope-OrgID"):
            assert "minLength" not in param["schema"] and "empty" in param["description"]
