"""Alembic environment. `migrate()` (migrate.py) passes an open connection, the target
schema and the TimescaleDB choice in `config.attributes`; run from the `alembic` command
line, it migrates OPSPILOT_DATABASE_URL (schema OPSPILOT_DATABASE_SCHEMA) the same way."""

from __future__ import annotations

import asyncio
import os

from alembic import context

from opspilot.adapters.postgres.schema import metadata

config = context.config


def run_with(connection, schema: str | None) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table_schema=schema,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_with(connection, config.attributes.get("schema"))
elif context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run `opspilot migrate`")
else:
    from opspilot.adapters.postgres.migrate import migrate

    url = os.environ.get("OPSPILOT_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set OPSPILOT_DATABASE_URL")
    asyncio.run(migrate(url, os.environ.get("OPSPILOT_DATABASE_SCHEMA")))
