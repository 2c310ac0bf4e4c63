"""Comma-separated node lists (ADR 0028): a dead node in OPSPILOT_AMQP_URL or
OPSPILOT_OPENSEARCH_URL costs one attempt, not an outage. The dead nodes are closed ports in
issue #22's range; the live one is the real service."""

from __future__ import annotations

import os

import pytest

from opspilot.adapters.opensearch.store import connect_opensearch
from opspilot.adapters.rabbitmq import _amqp
from opspilot.domain.errors import ServiceUnavailable
from tests.contract.queue_fixtures import amqp_url_or_skip

pytestmark = pytest.mark.integration

DEAD_AMQP = "amqp://guest:guest@127.0.0.1:22998/"
DEAD_HTTP = "http://127.0.0.1:22997"


async def test_the_broker_connection_skips_a_dead_node(monkeypatch: pytest.MonkeyPatch) -> None:
    url = await amqp_url_or_skip()
    monkeypatch.setattr(_amqp, "_first_node", 0)  # the dead node is tried first
    connection = await _amqp.open_connection(f"{DEAD_AMQP}, {url}", 3.0)
    try:
        assert not connection.is_closed
    finally:
        await connection.close()
    with pytest.raises(ServiceUnavailable):
        await _amqp.open_connection(f"{DEAD_AMQP},{DEAD_AMQP.replace('22998', '22996')}", 1.0)


async def test_opensearch_requests_go_round_a_dead_node() -> None:
    url = os.environ.get("OPSPILOT_OPENSEARCH_URL", "").split(",")[0]
    if not url:
        if os.environ.get("CI") or os.environ.get("OPSPILOT_REQUIRE_SERVICES") == "1":
            pytest.fail("OPSPILOT_OPENSEARCH_URL is not set")
        pytest.skip("OPSPILOT_OPENSEARCH_URL is not set")
    client = await connect_opensearch(f"{DEAD_HTTP},{url}")
    try:
        for _ in range(6):  # round robin: every other request meets the dead node first
            health = await client.cluster.health()
            assert health["status"] in ("green", "yellow")
    finally:
        await client.close()
