"""Channels cannot be made into a relay or a probe (issue #15 items 10 and 12), through the
API on in-memory adapters:

- what the SSRF guard refuses at delivery is refused when the channel is created (400 naming
  `target`), and the reason never says what a host name resolved to;
- e-mail recipients must be in OPSPILOT_EMAIL_ALLOWED_DOMAINS;
- the `test` action is capped per channel and per project (429 with Retry-After).

The real-services run of the same rules is tests/integration/test_channel_abuse_e2e.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from opspilot.adapters.clock_and_ids import FixedClock
from opspilot.container import Container, build_container, start_container, stop_container
from opspilot.entrypoints.api.app import create_app
from opspilot.entrypoints.assembly import api_services
from opspilot.settings import Settings
from tests.unit.conftest import ADMIN_TOKEN, NOW, Tenant, api_test_server, new_tenant


@pytest.fixture
async def strict(aiohttp_client: Any) -> AsyncIterator[tuple[Any, Tenant, FixedClock]]:
    """The API with an empty webhook allow-list, a recipients policy and small test caps."""
    settings = Settings(
        _env_file=None, database_url=None, opensearch_url=None, amqp_url=None, redis_url=None,
        ai_url=None, rate_limits_enabled=False, webhook_allowlist="", admin_token=ADMIN_TOKEN,
        email_allowed_domains="example.com, *.example.org", smtp_port=1,
        channel_tests_per_hour=2, project_channel_tests_per_hour=3,
    )
    container: Container = build_container(settings)
    clock = FixedClock(NOW)
    container.clock.override(clock)
    await start_container(container)
    try:
        tenant = await new_tenant(container, "abuse")
        client = await aiohttp_client(await api_test_server(create_app(api_services(container))))
        yield client, tenant, clock
    finally:
        await stop_container(container)


async def _create(client: Any, tenant: Tenant, **body: Any) -> tuple[int, Any]:
    response = await client.post("/api/channels", json={"name": "c", **body},
                                 headers=tenant.query_headers)
    return response.status, await response.json()


@pytest.mark.parametrize(("target", "said"), [
    ("http://169.254.169.254/latest/meta-data", "'169.254.169.254' is link-local"),
    ("http://0x7f.1:8080/hook", "'0x7f.1' is loopback"),
    ("http://[::ffff:10.0.0.1]/hook", "is private"),
    ("https://10.1.2.3/hook", "'10.1.2.3' is private"),
])
async def test_a_literal_internal_address_is_refused_at_creation(
    strict: Any, target: str, said: str
) -> None:
    client, tenant, _ = strict
    status, doc = await _create(client, tenant, type="webhook", url=target)
    assert status == 400, doc
    assert doc["error"]["details"]["field"] == "target"
    assert said in doc["error"]["message"]
    listed = await (await client.get("/api/channels", headers=tenant.query_headers)).json()
    assert listed["channels"] == []


@pytest.mark.parametrize("kind", ["webhook", "slack"])
async def test_a_name_resolving_inside_is_refused_without_saying_where(
    strict: Any, kind: str
) -> None:
    client, tenant, _ = strict
    status, doc = await _create(client, tenant, type=kind, url="http://localhost:9/hook")
    assert status == 400, doc
    error = doc["error"]
    assert error["details"] == {"field": "target"}
    assert "'localhost' resolves to an address notifications may not reach" in error["message"]
    text = str(doc)
    assert "127.0.0.1" not in text and "::1" not in text and "loopback" not in text


async def test_a_name_that_does_not_resolve_now_is_left_to_delivery(strict: Any) -> None:
    client, tenant, _ = strict
    status, doc = await _create(client, tenant, type="webhook",
                                url="https://hooks.invalid/opspilot")
    assert status == 201, doc


async def test_email_recipients_must_be_in_the_allowed_domains(strict: Any) -> None:
    client, tenant, _ = strict
    status, doc = await _create(client, tenant, type="email",
                                to="ops@example.com, boss@corp.net, x@a.example.org")
    assert status == 400, doc
    assert doc["error"]["details"]["field"] == "target"
    assert "boss@corp.net: not in the allowed recipient domains" in doc["error"]["message"]
    assert "ops@example.com" not in doc["error"]["message"]
    # `example.org` itself is not `*.example.org`
    status, doc = await _create(client, tenant, type="email", to="x@example.org")
    assert status == 400, doc
    status, doc = await _create(client, tenant, type="email",
                                to="ops@Example.COM, x@a.example.org")
    assert status == 201, doc


async def test_test_sends_are_capped_per_channel_then_per_project(strict: Any) -> None:
    client, tenant, clock = strict
    made = [(await _create(client, tenant, type="email", to=f"c{i}@example.com"))[1]["id"]
            for i in range(3)]

    async def test(channel_id: str) -> Any:
        return await client.post(f"/api/channels/{channel_id}/test",
                                 headers=tenant.query_headers)

    for _ in range(2):  # the relay (port 1) refuses: the attempt still counts
        assert (await test(made[0])).status == 200
    capped = await test(made[0])
    assert capped.status == 429
    doc = await capped.json()
    assert doc["error"]["details"]["field"] == "channel_id"
    assert "per channel" in doc["error"]["message"]
    assert 1 <= int(capped.headers["Retry-After"]) <= 1800
    assert (await test(made[1])).status == 200  # the project's third
    over = await test(made[2])
    assert over.status == 429 and "per project" in (await over.json())["error"]["message"]
