"""Issue #15 items 3-6: what an anonymous or careless caller can make one API process hold.

The API is served as `opspilot api` serves it (`start_api_site`: no inflation by the parser,
short idle timeout, no draining, a connection cap), on in-memory adapters, with small limits
so that each one is reached quickly. Requests are written on raw sockets where the point is
what the server does with the bytes of a connection.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any

import attrs
import orjson
import pytest

from opspilot.adapters.clock_and_ids import FixedClock
from opspilot.application.admission import ByteBudget
from opspilot.container import build_container, start_container, stop_container
from opspilot.domain.errors import ServiceUnavailable
from opspilot.entrypoints.api.app import create_app, start_api_site
from opspilot.entrypoints.assembly import api_services
from opspilot.settings import Settings
from tests.unit.conftest import NOW

STAMP = NOW.isoformat()
MiB = 1024 * 1024


@attrs.define
class Served:
    host: str
    port: int
    api_key: str
    token: str
    project_id: str
    container: Any

    async def raw(self, request: bytes, read_body: bool = True
                  ) -> tuple[int, dict[str, str], bytes, asyncio.StreamReader, Any]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return int(lines[0].split()[1]), headers, body, reader, writer


async def closed(reader: asyncio.StreamReader) -> bool:
    """The server closed the connection: end of stream, or a reset (it closed with unread
    body bytes of ours in its buffer, which is the point)."""
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionResetError:
        return True


async def ingest(served: Served, data: bytes, *headers: bytes) -> tuple[int, dict[str, str], bytes]:
    """POST /api/ingest/metrics with the project's key; the connection is closed after."""
    status, answer_headers, text, _, writer = await served.raw(post(
        "/api/ingest/metrics", data, *headers, f"X-API-Key: {served.api_key}".encode()))
    writer.close()
    return status, answer_headers, text


def post(path: str, body: bytes, *headers: bytes) -> bytes:
    head = [f"POST {path} HTTP/1.1".encode(), b"Host: x", b"Content-Type: application/json",
            f"Content-Length: {len(body)}".encode(), *headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def metrics_body(n: int = 1) -> bytes:
    return orjson.dumps({"metrics": [{"name": "cpu", "value": 1.0, "timestamp": STAMP}] * n})


@functools.cache
def bomb(inflated: int) -> bytes:
    """`inflated` zero bytes, gzip-compressed (about a thousandth of the size)."""
    out = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = b"\0" * MiB
    parts = [out.compress(chunk) for _ in range(inflated // MiB)]
    return b"".join(parts) + out.flush()


@pytest.fixture
async def served(request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    overrides = getattr(request, "param", {})
    settings = Settings(
        _env_file=None, database_url=None, opensearch_url=None, amqp_url=None, redis_url=None,
        ai_url=None, rate_limits_enabled=True, ingest_rate=1000.0, ingest_burst=1000,
        query_rate=1000.0, query_burst=1000, **overrides,
    )
    container = build_container(settings)
    container.clock.override(FixedClock(NOW))
    await start_container(container)
    made = await container.provisioner().create_project("limits")
    runner = await start_api_site(create_app(api_services(container)), "127.0.0.1", 0)
    host, port = runner.addresses[0][:2]
    try:
        yield Served(host, port, made.api_key, made.token, made.project_id, container)
    finally:
        await runner.cleanup()
        await stop_container(container)


# -- item 3: compressed bodies --------------------------------------------------------------


async def test_an_anonymous_gzip_bomb_is_401_at_once_and_never_inflated(served: Served) -> None:
    body = bomb(1024 * MiB)  # 1 GiB inflated: seconds of event-loop time if inflated
    started = time.monotonic()
    answers = await asyncio.gather(*(served.raw(post(
        "/api/ingest/metrics", body, b"Content-Encoding: gzip", b"X-API-Key: wrong"))
        for _ in range(4)))
    healthz = await served.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    elapsed = time.monotonic() - started
    assert healthz[0] == 200
    for status, headers, text, reader, writer in answers:
        assert status == 401
        assert headers["content-type"].startswith("application/json")
        assert headers.get("connection", "").lower() == "close"
        assert orjson.loads(text)["error"]["code"] == "unauthenticated"
        assert await closed(reader)  # closed, not drained
        writer.close()
    assert elapsed < 2.0, elapsed  # inflating 4 GiB would take tens of seconds


async def test_an_early_answer_closes_the_connection_without_reading_the_rest(
    served: Served,
) -> None:
    """Headers announcing 9 MiB, 1 KiB sent: the 401 comes at once and the server closes."""
    head = post("/api/ingest/metrics", b"", b"X-API-Key: wrong").replace(
        b"Content-Length: 0", f"Content-Length: {9 * MiB}".encode())
    status, headers, _, reader, writer = await served.raw(head + b"x" * 1024)
    assert status == 401 and headers["connection"].lower() == "close"
    assert await closed(reader)
    writer.close()


async def test_an_authenticated_gzip_body_is_inflated_and_accepted(served: Served) -> None:
    for encoding, data in (("gzip", gzip.compress(metrics_body(3))),
                           ("deflate", zlib.compress(metrics_body(3)))):
        status, _, text = await ingest(served, data, f"Content-Encoding: {encoding}".encode())
        assert status == 202, text
        assert orjson.loads(text)["accepted"] == 3


async def test_an_authenticated_bomb_stops_at_the_body_limit_with_413(served: Served) -> None:
    body = bomb(1024 * MiB)
    started = time.monotonic()
    status, _, text = await ingest(served, body, b"Content-Encoding: gzip")
    assert status == 413, text
    assert orjson.loads(text)["error"]["details"]["field"] == "body"
    assert time.monotonic() - started < 2.0  # it stopped at 10 MiB, not at 1 GiB


@pytest.mark.parametrize("data", [b"\x1f\x8bnot gzip", gzip.compress(b'{"metrics": []}')[:-12]])
async def test_undecodable_or_truncated_gzip_is_400(served: Served, data: bytes) -> None:
    status, _, text = await ingest(served, data, b"Content-Encoding: gzip")
    assert status == 400, text
    assert orjson.loads(text)["error"]["details"]["field"] == "body"


@pytest.mark.parametrize("encoding", [b"br", b"zstd", b"gzip, gzip", b"compress"])
async def test_other_encodings_are_415_json(served: Served, encoding: bytes) -> None:
    status, headers, text = await ingest(served, b"\x00\x01\x02", b"Content-Encoding: " + encoding)
    assert status == 415
    assert headers["content-type"].startswith("application/json")
    error = orjson.loads(text)["error"]
    assert error["code"] == "unsupported_media_type"
    assert error["details"]["field"] == "Content-Encoding"


# -- item 4: bytes in flight ------------------------------------------------------------------


def test_the_budget_admits_what_fits_and_one_oversized_body_alone() -> None:
    budget = ByteBudget(100)
    assert budget.take(60) == 60
    with pytest.raises(ServiceUnavailable) as refused:
        budget.take(50)
    assert refused.value.retry_after == 1.0
    budget.give_back(60)
    assert budget.take(500) == 500  # alone: the body-size limit decides, not the budget
    budget.give_back(500)
    assert budget.in_use == 0


@pytest.mark.parametrize("served", [{"max_inflight_bytes": 4096}], indirect=True)
async def test_past_the_budget_ingest_is_503_with_retry_after(served: Served) -> None:
    budget = served.container.request_budget()
    budget.take(4000)  # another request in flight
    status, headers, text = await ingest(served, metrics_body(10))
    assert status == 503, text
    assert headers["retry-after"] == "1"
    budget.give_back(4000)
    status, _, _ = await ingest(served, metrics_body(10))
    assert status == 202
    assert budget.in_use == 0  # given back once answered


# -- item 5: timeouts and connections ----------------------------------------------------------


@pytest.mark.parametrize("served", [{"http_idle_seconds": 0.5}], indirect=True)
async def test_a_connection_that_sends_headers_slowly_is_closed(served: Served) -> None:
    reader, writer = await asyncio.open_connection(served.host, served.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never ends its headers
    await writer.drain()
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 10) == b""
    assert time.monotonic() - started < 3
    writer.close()


@pytest.mark.parametrize("served", [{"http_body_seconds": 0.5}], indirect=True)
async def test_a_body_that_never_arrives_is_400_after_the_body_timeout(served: Served) -> None:
    head = post("/api/ingest/metrics", b"", f"X-API-Key: {served.api_key}".encode()).replace(
        b"Content-Length: 0", b"Content-Length: 1000")
    status, _, text, reader, writer = await served.raw(head + b'{"metrics"')
    assert status == 400
    assert orjson.loads(text)["error"]["details"]["field"] == "body"
    writer.close()


@pytest.mark.parametrize("served", [{"max_connections": 3}], indirect=True)
async def test_connections_past_the_cap_are_503_and_closed(served: Served) -> None:
    held = [await asyncio.open_connection(served.host, served.port) for _ in range(3)]
    reader, writer = await asyncio.open_connection(served.host, served.port)
    answer = await asyncio.wait_for(reader.read(), 5)
    assert answer.startswith(b"HTTP/1.1 503")
    assert b'"service_unavailable"' in answer
    writer.close()
    for _, w in held:
        w.close()


# -- item 6: failed authentications ------------------------------------------------------------


@pytest.mark.parametrize("served", [{"auth_failure_rate": 0.01, "auth_failure_burst": 5}],
                         indirect=True)
async def test_failed_authentications_are_rate_limited_per_address(served: Served) -> None:
    statuses = []
    for _ in range(8):
        status, headers, _, _, writer = await served.raw(post(
            "/api/ingest/metrics", metrics_body(), b"X-API-Key: guess"))
        writer.close()
        statuses.append(status)
    assert statuses == [401] * 5 + [429] * 3
    # the right key from the same address is blocked too, until the bucket refills
    status, headers, _ = await ingest(served, metrics_body())
    assert status == 429 and int(headers["retry-after"]) >= 1
    # and so is a query with another project's id (403 counts as a failure too)
    status, *_ , writer = await served.raw(
        b"GET /api/logs/query HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + served.token.encode() + b"\r\nX-Project-ID: other\r\n\r\n")
    writer.close()
    assert status == 429


# -- item 8: aiohttp's own protocol errors --------------------------------------------------


@pytest.mark.parametrize("request_bytes", [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",
    b"POST /api/ingest/metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
    b"Content-Length: 3\r\n\r\n{}",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
    b"GET /healthz HTTP/9.9 extra\r\nHost: x\r\n\r\n",
])
async def test_protocol_errors_are_answered_with_the_json_error_body(
    served: Served, request_bytes: bytes
) -> None:
    status, headers, text, _, writer = await served.raw(request_bytes)
    writer.close()
    assert 400 <= status < 500
    assert headers["content-type"].startswith("application/json")
    error = orjson.loads(text)["error"]
    assert error["details"]["field"] == "request"
    assert error["message"].startswith("malformed HTTP request")
