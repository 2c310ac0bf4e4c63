"""Unit fixtures: the whole API on in-memory adapters, with a clock tests can move."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from opspilot.adapters.clock_and_ids import FixedClock
from opspilot.container import Container, build_container, start_container, stop_container
from opspilot.domain.ingest import Stream
from opspilot.entrypoints.api.app import create_app, server_options
from opspilot.entrypoints.api.state import SERVICES
from opspilot.entrypoints.assembly import api_services
from opspilot.settings import Settings

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
async def container(clock: FixedClock) -> AsyncIterator[Container]:
    settings = Settings(
        _env_file=None, database_url=None, opensearch_url=None, amqp_url=None, redis_url=None,
        ai_url=None, rate_limits_enabled=False, webhook_allowlist="127.0.0.1",
        admin_token=ADMIN_TOKEN,
    )
    built = build_container(settings)
    built.clock.override(clock)
    await start_container(built)
    yield built
    await stop_container(built)


@attrs.frozen
class Tenant:
    project_id: str
    api_key: str
    token: str

    @property
    def ingest_headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key}

    @property
    def query_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "X-Project-ID": self.project_id}


@pytest.fixture
async def api(aiohttp_client: Any, container: Container) -> Any:
    return await aiohttp_client(await api_test_server(create_app(api_services(container))))


async def api_test_server(app: web.Application) -> TestServer:
    """The app served with the API's own server options (no inflation by aiohttp, ...):
    TestServer drops keyword arguments given to its constructor, so they go to
    start_server, which aiohttp_client then finds started."""
    server = TestServer(app)
    await server.start_server(**server_options(app[SERVICES]))
    return server


async def new_tenant(container: Container, name: str) -> Tenant:
    made = await container.provisioner().create_project(name)
    return Tenant(made.project_id, made.api_key, made.token)


@pytest.fixture
async def tenant(container: Container) -> Tenant:
    return await new_tenant(container, "alpha")


@pytest.fixture
async def other_tenant(container: Container) -> Tenant:
    return await new_tenant(container, "beta")


async def drain(container: Container) -> None:
    """Run the in-process worker until the in-memory queue holds nothing unacknowledged."""
    queue = container.memory_queue()
    worker = container.ingest_worker()  # the in-memory queue is its consumer
    task = asyncio.create_task(worker.run())
    for _ in range(500):
        if not any([await queue.depth(s) for s in (Stream.METRICS, Stream.LOGS)]):
            break
        await asyncio.sleep(0.01)
    worker.request_stop()
    await task
