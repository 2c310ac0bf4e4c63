"""The statements every store makes, written once: look-ups whose rows each store's mapping
function turns into domain objects, and the upsert that saves a whole object (insert, or
overwrite every column but the key)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from opspilot.adapters.postgres.session import Database

T = TypeVar("T")


async def fetch_one(
    db: Database, into: Callable[[Any], T], sql: str, *args: Any
) -> T | None:
    """The statement's first row made into `into`'s object, or None when it has no row."""
    async with db.connection() as conn:
        row = await conn.fetchrow(sql, *args)
    return into(row) if row else None


async def fetch_all(
    db: Database, into: Callable[[Any], T], sql: str, *args: Any
) -> list[T]:
    """Every row of the statement made into `into`'s object, in the statement's order."""
    async with db.connection() as conn:
        found = await conn.fetch(sql, *args)
    return [into(row) for row in found]


async def execute(db: Database, sql: str, *args: Any) -> None:
    async with db.connection() as conn:
        await conn.execute(sql, *args)


def upsert(table: str, columns: str, key: str) -> str:
    """INSERT of every column in `columns` (comma-separated, in the order of the bound
    parameters $1…$n); a row whose `key` (one or more of them) exists has every other column
    overwritten."""
    names = [c.strip() for c in columns.split(",")]
    keys = {k.strip() for k in key.split(",")}
    values = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in names if c not in keys)
    return (f"INSERT INTO {table} ({', '.join(names)}) VALUES ({values})"
            f" ON CONFLICT ({key}) DO UPDATE SET {updates}")
