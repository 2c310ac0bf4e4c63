"""PostgresTenancyStore: projects, users, memberships, API keys and tokens (hashes only)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from asyncpg import exceptions as pgx

from opspilot.domain.errors import Conflict
from opspilot.domain.tenancy import ApiKey, Project, Token, User

if TYPE_CHECKING:
    from opspilot.adapters.postgres.database import PostgresDatabase


def _token(row: Any) -> Token:
    return Token(row["id"], row["user_id"], row["token_hash"], row["created_at"], row["revoked"])


class PostgresTenancyStore:
    """Implements TenancyStore. Raises Conflict for a duplicate project name,
    TransientStoreError when PostgreSQL cannot answer."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    async def add_project(self, project: Project) -> None:
        try:
            async with self._db.connection() as conn:
                await conn.execute(
                    "INSERT INTO projects (id, name, created_at) VALUES ($1, $2, $3)",
                    project.id, project.name, project.created_at,
                )
        except pgx.UniqueViolationError:
            raise Conflict("a project with this name exists", {"field": "name"}) from None

    async def get_project(self, project_id: str) -> Project | None:
        async with self._db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT id, name, created_at FROM projects WHERE id = $1", project_id
            )
        return Project(row["id"], row["name"], row["created_at"]) if row else None

    async def add_user(self, user: User) -> None:
        async with self._db.connection() as conn:
            await conn.execute(
                "INSERT INTO users (id, name, created_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name,"
                " created_at = EXCLUDED.created_at",
                user.id, user.name, user.created_at,
            )

    async def add_membership(self, user_id: str, project_id: str) -> None:
        async with self._db.connection() as conn:
            await conn.execute(
                "INSERT INTO memberships (user_id, project_id) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING",
                user_id, project_id,
            )

    async def projects_of(self, user_id: str) -> frozenset[str]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT project_id FROM memberships WHERE user_id = $1", user_id
            )
        return frozenset(r["project_id"] for r in rows)

    async def add_api_key(self, key: ApiKey) -> None:
        async with self._db.connection() as conn:
            await conn.execute(
                "INSERT INTO api_keys (id, project_id, key_hash, created_at, revoked)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key_hash) DO UPDATE SET"
                " id = EXCLUDED.id, project_id = EXCLUDED.project_id,"
                " created_at = EXCLUDED.created_at, revoked = EXCLUDED.revoked",
                key.id, key.project_id, key.key_hash, key.created_at, key.revoked,
            )

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        async with self._db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT id, project_id, key_hash, created_at, revoked FROM api_keys"
                " WHERE key_hash = $1 AND NOT revoked",
                key_hash,
            )
        if row is None:
            return None
        return ApiKey(row["id"], row["project_id"], row["key_hash"], row["created_at"],
                      row["revoked"])

    async def add_token(self, token: Token) -> None:
        async with self._db.connection() as conn:
            await conn.execute(
                "INSERT INTO tokens (id, user_id, token_hash, created_at, revoked)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (token_hash) DO UPDATE SET"
                " id = EXCLUDED.id, user_id = EXCLUDED.user_id,"
                " created_at = EXCLUDED.created_at, revoked = EXCLUDED.revoked",
                token.id, token.user_id, token.token_hash, token.created_at, token.revoked,
            )

    async def find_token(self, token_hash: str) -> Token | None:
        async with self._db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT id, user_id, token_hash, created_at, revoked FROM tokens"
                " WHERE token_hash = $1 AND NOT revoked",
                token_hash,
            )
        return _token(row) if row else None

    async def revoke_token(self, token_id: str) -> Token | None:
        async with self._db.connection() as conn:
            row = await conn.fetchrow(
                "UPDATE tokens SET revoked = true WHERE id = $1"
                " RETURNING id, user_id, token_hash, created_at, revoked",
                token_id,
            )
        return _token(row) if row else None
