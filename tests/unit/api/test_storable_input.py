"""Issue #15 items 1, 2 and 7: what the stores cannot hold is refused at the API (400 naming
the field), and bad header bytes are a 4xx JSON answer, never a 500."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from opspilot.domain import storable
from opspilot.entrypoints.api.errors import error_response
from tests.unit.conftest import NOW

STAMP = NOW.isoformat()


def _error(doc: Any) -> dict[str, Any]:
    assert set(doc) == {"error"}
    return doc["error"]


def _metric(**fields: Any) -> dict[str, Any]:
    return {"name": "cpu", "value": 1.0, "timestamp": STAMP, **fields}


def _log(**fields: Any) -> dict[str, Any]:
    return {"level": "INFO", "message": "hello", "timestamp": STAMP, **fields}


@pytest.mark.parametrize(("kind", "item", "field"), [
    ("metrics", _metric(service="a\x00b"), "metrics[1].service"),
    ("metrics", _metric(tags={"k\x00": "v"}), "metrics[1].tags"),
    ("metrics", _metric(tags={"k": "v\x00"}), "metrics[1].tags.k"),
    ("logs", _log(service="a\x00"), "logs[1].service"),
    ("logs", _log(level="INFO\x00"), "logs[1].level"),
    ("logs", _log(trace_id="t\x00"), "logs[1].trace_id"),
    ("logs", _log(correlation_id="\x00"), "logs[1].correlation_id"),
    ("logs", _log(message="before\x00after"), "logs[1].message"),  # refused, not escaped
    ("logs", _log(context={"k\x00": 1}), "logs[1].context"),
    ("logs", _log(context={"user": {"name": "a\x00"}}), "logs[1].context.user.name"),
    ("logs", _log(context={"list": ["ok", "\x00"]}), "logs[1].context.list[1]"),
    ("logs", _log(context={"k" * 257: 1}), "logs[1].context"),
])
async def test_unstorable_text_in_an_item_is_400_naming_the_item_and_field(
    api: Any, tenant: Any, kind: str, item: dict[str, Any], field: str
) -> None:
    first = _metric() if kind == "metrics" else _log()
    response = await api.post(f"/api/ingest/{kind}", headers=tenant.ingest_headers,
                              json={kind: [first, item]})
    assert response.status == 400
    error = _error(await response.json())
    assert error["details"]["field"].startswith(field)  # a bad key: `metrics[1].tags.<key>`


async def test_the_message_says_why_in_the_store_s_terms(api: Any, tenant: Any) -> None:
    response = await api.post("/api/ingest/metrics", headers=tenant.ingest_headers,
                              json={"metrics": [_metric(service="a\x00")]})
    error = _error(await response.json())
    assert error["message"] == f"metrics[0].service: {storable.NUL_REASON}"


@pytest.mark.parametrize("depth", [storable.MAX_JSON_DEPTH + 1, 300, 1000])
async def test_a_context_nested_deeper_than_the_stores_take_is_400(
    api: Any, tenant: Any, depth: int
) -> None:
    body = b'{"logs": [{"level": "INFO", "message": "m", "timestamp": "%s", "context": %s1%s}]}' % (
        STAMP.encode(), b'{"a":' * depth, b"}" * depth)
    response = await api.post("/api/ingest/logs", headers={
        **tenant.ingest_headers, "Content-Type": "application/json"}, data=body)
    assert response.status == 400
    error = _error(await response.json())
    assert error["details"]["field"].startswith("logs[0].context")
    assert "nested" in error["message"]


async def test_a_context_at_the_depth_limit_is_accepted(api: Any, tenant: Any) -> None:
    context: Any = 1
    for _ in range(storable.MAX_JSON_DEPTH):
        context = {"a": context}
    response = await api.post("/api/ingest/logs", headers=tenant.ingest_headers,
                              json={"logs": [_log(context=context)]})
    assert response.status == 202


async def test_a_lone_surrogate_in_a_body_is_400(api: Any, tenant: Any) -> None:
    body = b'{"metrics": [{"name": "cpu", "value": 1.0, "timestamp": "%s", "service": "\\ud800"}]}'
    response = await api.post("/api/ingest/metrics", data=body % STAMP.encode(), headers={
        **tenant.ingest_headers, "Content-Type": "application/json"})
    assert response.status == 400
    assert _error(await response.json())["details"]["field"] == "body"


@pytest.mark.parametrize(("path", "field"), [
    ("/api/metrics/query?metric_name=cpu&service_name=a%00", "service_name"),
    ("/api/metrics/query?metric_name=cpu&tags=k:v%00", "tags"),
    ("/api/metrics/histogram?metric_name=cpu&tags=k%00:v", "tags"),
    ("/api/logs/query?service_name=%00", "service_name"),
    ("/api/logs/query?search=a%00b", "search"),
    ("/api/logs/volume?search=a%00b", "search"),
    ("/api/logs/query?trace_id=%00", "trace_id"),
    ("/api/incidents?rule_id=r%00", "rule_id"),
    ("/api/rules/r%00", "rule_id"),
    ("/api/channels/c%00", "channel_id"),
    ("/api/incidents/i%00", "incident_id"),
    ("/api/logs/l%00/context", "log_id"),
])
async def test_nul_in_query_and_path_text_is_400(
    api: Any, tenant: Any, path: str, field: str
) -> None:
    response = await api.get(path, headers=tenant.query_headers)
    assert response.status == 400
    assert _error(await response.json())["details"]["field"] == field


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/rules", {"name": "r\x00", "metric_name": "cpu", "threshold": 1.0}, "name"),
    ("/api/rules", {"name": "r", "metric_name": "cpu", "threshold": 1.0,
                    "service_name": "s\x00"}, "service_name"),
    ("/api/rules", {"name": "r", "metric_name": "cpu", "threshold": 1.0,
                    "tags": {"k": "\x00"}}, "tags.k"),
    ("/api/rules", {"name": "r", "metric_name": "cpu", "threshold": 1.0,
                    "channels": ["c\x00"]}, "channels[0]"),
    ("/api/channels", {"name": "c\x00", "type": "webhook",
                       "target": "http://127.0.0.1:9/x"}, "name"),
    ("/api/channels", {"name": "c", "type": "webhook",
                       "target": "http://127.0.0.1:9/\x00"}, "target"),
    ("/api/metrics/query-multiple", {"metrics": [{"name": "cpu", "service": "\x00"}],
                                     "start_time": STAMP, "end_time": STAMP},
     "metrics[0].service"),
])
async def test_nul_in_bodies_of_rules_channels_and_queries_is_400(
    api: Any, tenant: Any, path: str, body: dict[str, Any], field: str
) -> None:
    response = await api.post(path, json=body, headers=tenant.query_headers)
    assert response.status == 400
    assert _error(await response.json())["details"]["field"] == field


# -- bad header bytes: a raw request, since clients refuse to send them ----------------------


async def raw(api: Any, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection(api.server.host, api.server.port)
    try:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body
    finally:
        writer.close()


@pytest.mark.parametrize(("method", "path", "header", "status"), [
    ("GET", "/api/logs/query", b"Authorization: Bearer \xff", 401),
    ("POST", "/api/ingest/metrics", b"X-API-Key: \xff", 401),
    ("POST", "/api/ingest/metrics", b"X-API-Key: k\xc3\x28", 401),
])
async def test_undecodable_credentials_are_401_json(
    api: Any, method: str, path: str, header: bytes, status: int
) -> None:
    request = (f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n".encode()
               + header + b"\r\nConnection: close\r\n\r\n")
    got, headers, body = await raw(api, request)
    assert got == status
    assert headers["content-type"].startswith("application/json")
    assert _error(orjson.loads(body))["details"]["field"] in ("Authorization", "X-API-Key")


async def test_an_undecodable_project_header_is_400_json(api: Any, tenant: Any) -> None:
    request = (b"GET /api/logs/query HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
               + tenant.token.encode() + b"\r\nX-Project-ID: \xff\r\nConnection: close\r\n\r\n")
    status, headers, body = await raw(api, request)
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    assert _error(orjson.loads(body))["details"]["field"] == "X-Project-ID"


def test_the_error_body_is_written_whatever_its_details_quote() -> None:
    deep: Any = "x"
    for _ in range(300):
        deep = [deep]
    response = error_response(400, "invalid_input", "bad \udcff",
                              {"field": "X-Project-ID", "value": "\udcff", "deep": deep})
    assert response.content_type == "application/json"
    doc = orjson.loads(response.body)
    assert doc["error"]["message"] == "bad \\udcff"
    assert doc["error"]["details"]["value"] == "\\udcff"
