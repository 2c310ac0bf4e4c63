"""Schemathesis fuzzes the real aiohttp app through its own /api/openapi.json.

The app runs on in-memory adapters (the unit `container` settings: FixedClock, rate limits
off) in a background thread, because schemathesis calls it synchronously over HTTP. Every
operation gets positive and negative cases, with the credentials of a real project, and each
answer is checked: no 5xx, only documented statuses and content types, bodies that match the
documented schemas, `Allow` on 405, and the standard error body on every 4xx.

The operations are parametrized at collection from `build_document()`, the function that
serves /api/openapi.json, and `test_served_document_is_the_one_fuzzed` checks that the server
serves exactly that document. (Loading it from the running server at test time needs
`schemathesis.pytest.from_fixture`, which schemathesis 4.32 cannot run under pytest 9.2: it
sets `Node._nodeid`, which pytest 9.2 no longer has.)

Bounded and derandomized: a fixed number of examples per operation, no example database, so
a run is the same every time and takes well under a minute.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import checks as st_checks
from schemathesis.specs.openapi import checks as oa_checks

from opspilot.adapters.clock_and_ids import FixedClock
from opspilot.container import build_container, start_container, stop_container
from opspilot.entrypoints.api.app import create_app, start_api_site
from opspilot.entrypoints.api.openapi import build_document
from opspilot.entrypoints.assembly import api_services  # (adds the alert routes)
from opspilot.settings import Settings
from tests.protobuf_bodies import protobuf_bodies
from tests.unit.conftest import ADMIN_TOKEN, NOW, Tenant, new_tenant

MAX_EXAMPLES = 25  # per operation and phase; 31 operations run in ~20 s on this machine


class EmbeddedServer:
    """The API on 127.0.0.1 (a free port), served by its own event loop in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.base_url = ""
        self.tenant: Tenant | None = None

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=30)

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()

    async def _start(self) -> None:
        settings_ = Settings(
            _env_file=None, database_url=None, opensearch_url=None, amqp_url=None,
            redis_url=None, ai_url=None, rate_limits_enabled=False,
            webhook_allowlist="127.0.0.1", admin_token=ADMIN_TOKEN,
        )
        self.container = build_container(settings_)
        self.container.clock.override(FixedClock(NOW))
        await start_container(self.container)
        self.tenant = await new_tenant(self.container, "fuzz")
        self.runner = await start_api_site(create_app(api_services(self.container)),
                                           "127.0.0.1", 0)
        port = self.runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        await self.runner.cleanup()
        await stop_container(self.container)


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedServer]:
    embedded = EmbeddedServer()
    embedded.start()
    try:
        yield embedded
    finally:
        embedded.stop()


def auth_headers(server: EmbeddedServer) -> dict[str, str]:
    tenant = server.tenant
    assert tenant is not None
    # Both kinds of credentials on every request: each operation reads the one it documents.
    # X-Project-ID is fixed to the tenant's project, or every query would answer 403.
    return {**tenant.ingest_headers, **tenant.query_headers}


# The protocol doors (OTLP, remote-write) take protobuf: bodies are real messages or bytes.
schemathesis.openapi.media_type(
    "application/x-protobuf",
    st.one_of(st.sampled_from(protobuf_bodies(NOW)), st.binary(max_size=64)))


def protobuf_error_shape(response: Any) -> None:
    """An OTLP error for a protobuf request is a protobuf google.rpc.Status (the OTLP/HTTP
    spec) whose message names the field: `<field>: <reason>`."""
    from google.rpc.status_pb2 import Status

    status = Status.FromString(response.content)
    assert status.code, f"{response.status_code} Status without a code: {status}"
    if response.status_code in (400, 413, 415):
        assert ": " in status.message, f"{response.status_code} names no field: {status}"


@schemathesis.check
def error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx/5xx body is `{"error": {"code", "message", "details"}}` (a protobuf Status
    for OTLP's protobuf requests); an input error's details name the field at fault."""
    if response.status_code < 400:
        return None
    if response.headers.get("content-type", [""])[0].startswith("application/x-protobuf"):
        protobuf_error_shape(response)
        return None
    try:
        doc = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"{response.status_code} body is not JSON: {response.content[:200]!r}") from None
    prometheus_api = case.path.startswith("/api/v1/") and case.path != "/api/v1/write"
    if prometheus_api and response.status_code != 405:  # (the router answers a 405)
        return _prometheus_error_shape(response.status_code, doc)
    error = doc.get("error") if isinstance(doc, dict) else None
    assert isinstance(error, dict), f"{response.status_code} body has no `error` object: {doc!r}"
    assert isinstance(error.get("code"), str), f"`error.code` is not a string: {doc!r}"
    assert isinstance(error.get("message"), str), f"`error.message` is not a string: {doc!r}"
    assert isinstance(error.get("details"), dict), f"`error.details` is not an object: {doc!r}"
    if response.status_code in (400, 404, 405, 409, 413):
        assert isinstance(error["details"].get("field"), str), (
            f"{response.status_code} does not name the field at fault: {doc!r}"
        )
    return None


def _prometheus_error_shape(status: int, doc: Any) -> None:
    """The Prometheus API answers errors in Prometheus' envelope (its clients parse that),
    an input error's details naming the field at fault."""
    assert isinstance(doc, dict) and doc.get("status") == "error", f"{status}: {doc!r}"
    assert isinstance(doc.get("errorType"), str) and isinstance(doc.get("error"), str), doc
    if status == 400:
        assert isinstance((doc.get("details") or {}).get("field"), str), (
            f"400 does not name the field at fault: {doc!r}")


CHECKS = [
    st_checks.not_a_server_error,
    oa_checks.status_code_conformance,
    oa_checks.content_type_conformance,
    oa_checks.response_headers_conformance,
    oa_checks.response_schema_conformance,
    oa_checks.unsupported_method,
    oa_checks.missing_required_header,
    oa_checks.ignored_auth,
    error_shape,
]
# Left out on purpose:
# - positive_data_acceptance: some rules span fields or need state, which JSON Schema cannot
#   say (end_time after start_time, at most 90 days; threshold rules need a threshold;
#   timestamps 1970-5000; opaque cursors; e-mail lists), so schema-valid input can get 400.
# - negative_data_rejection: the fixed credentials replace the headers a negative case breaks
#   (a missing X-Project-ID becomes a valid one), so such a case is rightly answered 2xx.
#   (`schemathesis run` with the same `-H` headers handles that, and passes this check.)

DOCUMENT = build_document()
schema = schemathesis.openapi.from_dict(DOCUMENT)


def test_served_document_is_the_one_fuzzed(server: EmbeddedServer) -> None:
    import requests

    served = requests.get(f"{server.base_url}/api/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == json.loads(json.dumps(DOCUMENT))


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_answers_by_its_own_schema(case: Any, server: EmbeddedServer) -> None:
    case.call_and_validate(
        base_url=server.base_url, headers=auth_headers(server), checks=CHECKS, timeout=30
    )
