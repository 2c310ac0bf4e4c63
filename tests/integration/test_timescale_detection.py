"""`opspilot migrate` picks TimescaleDB only when the extension is usable on the server.

Three server states, each with its expected layout:
- no extension files (what CI's Debian PostgreSQL has): plain partitions, nothing logged;
- files installed but the library not preloaded: plain partitions and a warning that says
  how to enable it (this used to crash `migrate` with "undefined symbol");
- preloaded: hypertables.
A server is in one state, so each test asserts what that state implies; the last two were run
on a local build of TimescaleDB 2.28.3 (see the issue note), CI runs the first.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from opspilot.adapters.postgres.database import asyncpg_dsn
from opspilot.adapters.postgres.migrate import migrate
from tests.contract.conftest import database_url_or_skip

pytestmark = pytest.mark.integration


async def server_state(url: str) -> str:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        if not await conn.fetchval(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"):
            return "absent"
        preloaded = await conn.fetchval("SELECT current_setting('shared_preload_libraries')")
        return "preloaded" if "timescaledb" in preloaded else "not preloaded"
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def migrated_schema(url: str, **options: Any) -> AsyncIterator[str]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        await migrate(url, schema, **options)
        yield schema
    finally:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def metrics_kind(url: str, schema: str) -> str:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return str(await conn.fetchval(
            "SELECT c.relkind::text FROM pg_class c WHERE c.oid = to_regclass($1)",
            f'"{schema}".metrics'))
    finally:
        await conn.close()


async def test_migrate_uses_timescale_only_when_usable(caplog: pytest.LogCaptureFixture) -> None:
    url = await database_url_or_skip()
    state = await server_state(url)
    with caplog.at_level(logging.WARNING, logger="opspilot.migrate"):
        async with migrated_schema(url) as schema:
            kind = await metrics_kind(url, schema)
    warnings = [r.getMessage() for r in caplog.records if r.name == "opspilot.migrate"]
    if state == "preloaded":
        assert kind == "r", "a hypertable (a plain table with chunks)"
        assert warnings == []
    elif state == "not preloaded":
        assert kind == "p", "plain partitions instead of a crash"
        assert len(warnings) == 1 and "shared_preload_libraries" in warnings[0]
    else:
        assert kind == "p"
        assert warnings == [], "no extension at all is the ordinary case: nothing to say"


async def test_asking_for_timescale_where_it_is_not_usable_says_why() -> None:
    url = await database_url_or_skip()
    if await server_state(url) == "preloaded":
        async with migrated_schema(url, timescale=True) as schema:
            assert await metrics_kind(url, schema) == "r"
        return
    with pytest.raises(RuntimeError, match="TimescaleDB was asked for but is not usable"):
        async with migrated_schema(url, timescale=True):
            pass
