"""Fixtures for the LogStore contract: the same tests on the in-memory and OpenSearch stores.

The OpenSearch store needs OPSPILOT_OPENSEARCH_URL. Without it (or with the node
unreachable) its tests skip, unless CI or OPSPILOT_REQUIRE_SERVICES=1 is set: then they
fail. Each OpenSearch store gets its own index prefix; its indices and template are deleted
afterwards. Writes refresh, so what a test wrote is searchable when the write returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import pytest
from opensearchpy import AsyncOpenSearch

from opspilot.adapters.memory.logs import InMemoryLogStore
from opspilot.adapters.opensearch import mapping
from opspilot.adapters.opensearch.store import OpenSearchLogStore, connect_opensearch
from tests.services import services_required, unavailable

__all__ = [
    "LOG_BACKENDS", "log_store", "opensearch_log_store", "opensearch_store",
    "opensearch_url_or_skip",
]

LOG_BACKENDS = ["memory", "opensearch"]


def _unavailable(reason: str) -> NoReturn:
    unavailable("OpenSearch", reason)


async def _wait_for_node(url: str) -> None:
    """Return once the node answers a cluster health request (up to 60 s in CI)."""
    deadline = asyncio.get_running_loop().time() + (60.0 if services_required() else 3.0)
    error: BaseException | None = None
    client = AsyncOpenSearch(hosts=[url], timeout=3, max_retries=0)
    try:
        while asyncio.get_running_loop().time() < deadline:
            try:
                await client.cluster.health(wait_for_status="yellow")
                return
            except Exception as exc:  # any failure means: not available (yet)
                error = exc
                await asyncio.sleep(0.5)
    finally:
        await client.close()
    _unavailable(f"{url}: {error!r}")


async def opensearch_url_or_skip() -> str:
    """The node's URL once it answers; skips (or fails, in CI) when there is none."""
    url = os.environ.get("OPSPILOT_OPENSEARCH_URL")
    if not url:
        _unavailable("OPSPILOT_OPENSEARCH_URL is not set")
        raise AssertionError("unreachable")
    await _wait_for_node(url)
    return url


@contextlib.asynccontextmanager
async def opensearch_log_store(url: str, **options: Any) -> AsyncIterator[OpenSearchLogStore]:
    """A store on a fresh index prefix, torn down (indices and template) afterwards."""
    prefix = f"t-{uuid.uuid4().hex[:12]}-"
    client = await connect_opensearch(url)
    store = OpenSearchLogStore(client, prefix=prefix, refresh=options.pop("refresh", True),
                               **options)
    try:
        await store.ensure_template()
        yield store
    finally:
        with contextlib.suppress(Exception):
            names = await client.indices.get(index=f"{prefix}*", expand_wildcards="all")
            if names:  # by name: wildcard deletes may be refused (destructive_requires_name)
                await client.indices.delete(index=",".join(names))
        with contextlib.suppress(Exception):
            await client.indices.delete_index_template(name=mapping.alias_name(prefix))
        await client.close()


@pytest.fixture(params=LOG_BACKENDS)
async def log_store(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield InMemoryLogStore()
        return
    url = await opensearch_url_or_skip()
    async with opensearch_log_store(url) as store:
        yield store


@pytest.fixture
async def opensearch_store() -> AsyncIterator[OpenSearchLogStore]:
    """The OpenSearch store alone, for what only it has (bulk errors, retention, scroll)."""
    async with opensearch_log_store(await opensearch_url_or_skip()) as store:
        yield store
