"""Fixtures for the PostgreSQL-backed ports' contracts: each store fixture runs every test on
the in-memory reference and on the PostgreSQL adapter.

The PostgreSQL cases need OPSPILOT_DATABASE_URL and a server that answers; without them they
skip, unless CI or OPSPILOT_REQUIRE_SERVICES=1 is set: then they fail. Each PostgreSQL case
migrates a fresh schema (`t_<hex>`) and drops it afterwards.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, NoReturn

import pytest
from cryptography.fernet import Fernet

from opspilot.adapters.memory.alerting import (
    InMemoryChannelStore,
    InMemoryIncidentStore,
    InMemoryRuleStore,
)
from opspilot.adapters.memory.logs import InMemoryLogMetadataStore
from opspilot.adapters.memory.metrics import InMemoryMetricStore
from opspilot.adapters.memory.tenancy import InMemoryTenancyStore
from opspilot.adapters.secrets import FernetSecretBox
from tests.services import services_required, unavailable

BACKENDS = ["memory", "postgres"]
# The PostgreSQL stores' clock: daily partitions exist around it (the tests' data is in
# early 2024); what lies outside the horizon lands in the DEFAULT partition.
PG_NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def _unavailable(reason: str) -> NoReturn:
    unavailable("PostgreSQL", reason)


async def database_url_or_skip() -> str:
    """The server's URL once it answers; skips (or fails, in CI) when there is none."""
    import asyncpg

    from opspilot.adapters.postgres.database import asyncpg_dsn

    url = os.environ.get("OPSPILOT_DATABASE_URL")
    if not url:
        _unavailable("OPSPILOT_DATABASE_URL is not set")
        raise AssertionError("unreachable")
    try:
        conn = await asyncpg.connect(asyncpg_dsn(url), timeout=30 if services_required() else 3)
        await conn.close()
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        _unavailable(f"{url}: {exc!r}")
    return url


@contextlib.asynccontextmanager
async def fresh_database(**options: Any) -> AsyncIterator[Any]:
    """A connected PostgresDatabase on a freshly migrated schema, dropped afterwards."""
    import asyncpg

    from opspilot.adapters.postgres.database import PostgresDatabase, asyncpg_dsn
    from opspilot.adapters.postgres.migrate import migrate

    url = await database_url_or_skip()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    await migrate(url, schema, timescale=options.pop("timescale", None))
    options.setdefault("now", lambda: PG_NOW)
    options.setdefault("secret_box", FernetSecretBox([Fernet.generate_key().decode()]))
    db = PostgresDatabase(url, schema=schema, max_size=options.pop("max_size", 4), **options)
    try:
        await db.connect()
        yield db
    finally:
        await db.close()
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


@contextlib.asynccontextmanager
async def _store(backend: str, memory: Any, attribute: str) -> AsyncIterator[Any]:
    if backend == "memory":
        yield memory()
        return
    async with fresh_database() as db:
        yield getattr(db, attribute)


# Far enough ahead that every test's points lie in closed periods.
COMPACT_ALL_BEFORE = datetime(2200, 1, 1, tzinfo=UTC)


class CompactingMetricStore:
    """A metric store that compacts every closed period right after each write: the metric
    contract then runs on the compacted tier, and on late-point merges (tests that write
    twice into one hour)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def write_batches(self, batches: Any) -> int:
        written = int(await self.store.write_batches(batches))
        result = await self.store.compact(COMPACT_ALL_BEFORE)
        assert result.backlog == 0
        return written


@pytest.fixture(params=[*BACKENDS, "memory-compacted", "postgres-compacted"])
async def metric_store(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    backend, _, compacted = request.param.partition("-")
    async with _store(backend, InMemoryMetricStore, "metric_store") as store:
        yield CompactingMetricStore(store) if compacted else store


@pytest.fixture(params=BACKENDS)
async def log_metadata_store(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    async with _store(request.param, InMemoryLogMetadataStore, "log_metadata_store") as store:
        yield store


@pytest.fixture(params=BACKENDS)
async def tenancy_store(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    async with _store(request.param, InMemoryTenancyStore, "tenancy_store") as store:
        yield store


@pytest.fixture(params=BACKENDS)
async def rule_store(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    async with _store(request.param, InMemoryRuleStore, "rule_store") as store:
        yield store


@pytest.fixture(params=BACKENDS)
async def channel_store(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    async with _store(request.param, InMemoryChannelStore, "channel_store") as store:
        yield store


@pytest.fixture(params=BACKENDS)
async def incident_store(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    async with _store(request.param, InMemoryIncidentStore, "incident_store") as store:
        yield store
