"""Bring a database (or one schema of it, for test isolation) to the latest migration."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from opspilot.adapters.postgres.errors import translated

HERE = Path(__file__).resolve().parent
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_MIGRATION_LOCK = 0x0A1E28  # advisory key: concurrent `migrate` runs take turns


def checked_schema(schema: str | None) -> str | None:
    if schema is not None and not IDENTIFIER.match(schema):
        raise ValueError(f"schema {schema!r} is not a plain identifier")
    return schema


def sqlalchemy_url(url: str) -> str:
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql+asyncpg://", url)


def alembic_config(connection: Any = None, schema: str | None = None,
                   timescale: bool | None = None) -> Config:
    config = Config(str(HERE / "alembic.ini"))
    config.set_main_option("script_location", str(HERE / "migrations"))
    config.set_main_option("version_locations", str(HERE / "migrations" / "versions"))
    config.set_main_option("path_separator", "os")
    config.attributes.update(connection=connection, schema=schema, timescale=timescale)
    return config


async def migrate(dsn: str, schema: str | None = None, *, timescale: bool | None = None) -> None:
    """Upgrade to head, in one transaction. `schema` (created if missing) receives the
    tables and the `alembic_version` row; None uses the server's default search_path.
    `timescale` None: hypertables when the extension is available, else partitions."""
    schema = checked_schema(schema)
    engine = create_async_engine(sqlalchemy_url(dsn), poolclass=NullPool)
    try:
        with translated("migrate"):
            async with engine.begin() as conn:
                await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
                if schema:
                    await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
                    await conn.execute(text(f'SET LOCAL search_path TO "{schema}", public'))
                await conn.run_sync(_upgrade, schema, timescale)
    finally:
        await engine.dispose()


def _upgrade(connection: Any, schema: str | None, timescale: bool | None) -> None:
    command.upgrade(alembic_config(connection, schema, timescale), "head")
