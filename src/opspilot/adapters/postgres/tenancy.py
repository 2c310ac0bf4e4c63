"""PostgresTenancyStore: projects, users, memberships, API keys, tokens (hashes only) and the
audit log."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from asyncpg import exceptions as pgx

from opspilot.adapters.postgres import statements
from opspilot.domain.errors import Conflict
from opspilot.domain.tenancy import (
    ApiKey,
    AuditEvent,
    KeyScope,
    Membership,
    MetricRetention,
    Project,
    Role,
    Token,
    User,
)

if TYPE_CHECKING:
    from opspilot.adapters.postgres.session import Database

TOKEN_COLUMNS = "id, user_id, token_hash, created_at, revoked, name, prefix, expires_at"
KEY_COLUMNS = (
    "id, project_id, key_hash, created_at, revoked, name, scope, prefix, expires_at, last_used_at"
)
SAVE_KEY = statements.upsert("api_keys", KEY_COLUMNS, "key_hash")
SAVE_TOKEN = statements.upsert("tokens", TOKEN_COLUMNS, "token_hash")
SAVE_USER = statements.upsert("users", "id, name, created_at, admin", "id")


def _project(row: Any) -> Project:
    return Project(row["id"], row["name"], row["created_at"], _retention(row))


def _membership(row: Any) -> Membership:
    return Membership(row["user_id"], row["project_id"], Role(row["role"]))


def _token(row: Any) -> Token:
    return Token(row["id"], row["user_id"], row["token_hash"], row["created_at"], row["revoked"],
                 row["name"], row["prefix"], row["expires_at"])


def _key(row: Any) -> ApiKey:
    return ApiKey(row["id"], row["project_id"], row["key_hash"], row["created_at"],
                  row["revoked"], row["name"], KeyScope(row["scope"]), row["prefix"],
                  row["expires_at"], row["last_used_at"])


def _retention(row: Any) -> MetricRetention:
    return MetricRetention(row["metric_values_days"], row["metric_summary_days"])


def _user(row: Any) -> User:
    return User(row["id"], row["name"], row["created_at"], row["admin"])


def _event(row: Any) -> AuditEvent:
    return AuditEvent(row["id"], row["at"], row["actor"], row["action"], row["project_id"],
                      row["target"], orjson.loads(row["details"]))


class PostgresTenancyStore:
    """Implements TenancyStore. Raises Conflict for a duplicate project name or user e-mail,
    TransientStoreError when PostgreSQL cannot answer."""

    def __init__(self, db: Database) -> None:
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
        return await statements.fetch_one(
            self._db, _project,
            "SELECT id, name, created_at, metric_values_days, metric_summary_days"
            " FROM projects WHERE id = $1", project_id,
        )

    async def set_metric_retention(self, project_id: str, retention: MetricRetention) -> bool:
        async with self._db.connection() as conn:
            status = await conn.execute(
                "UPDATE projects SET metric_values_days = $2, metric_summary_days = $3"
                " WHERE id = $1", project_id, retention.values_days, retention.summary_days)
        return bool(status != "UPDATE 0")

    async def metric_retentions(self) -> dict[str, MetricRetention]:
        found = await statements.fetch_all(
            self._db, _project,
            "SELECT id, name, created_at, metric_values_days, metric_summary_days FROM projects"
            " WHERE metric_values_days IS NOT NULL OR metric_summary_days IS NOT NULL")
        return {project.id: project.metric_retention for project in found}

    async def add_user(self, user: User) -> None:
        try:
            async with self._db.connection() as conn:
                await conn.execute(
                    SAVE_USER,
                    user.id, user.name, user.created_at, user.admin,
                )
        except pgx.UniqueViolationError:
            raise Conflict("a user with this e-mail exists", {"field": "email"}) from None

    async def get_user(self, user_id: str) -> User | None:
        return await self._one_user("id", user_id)

    async def find_user(self, name: str) -> User | None:
        return await self._one_user("name", name)

    async def _one_user(self, column: str, value: str) -> User | None:
        return await statements.fetch_one(
            self._db, _user,
            f"SELECT id, name, created_at, admin FROM users WHERE {column} = $1", value
        )

    async def add_membership(self, user_id: str, project_id: str, role: Role = Role.OWNER) -> None:
        async with self._db.connection() as conn:
            await conn.execute(
                "INSERT INTO memberships (user_id, project_id, role) VALUES ($1, $2, $3)"
                " ON CONFLICT (user_id, project_id) DO UPDATE SET role = EXCLUDED.role",
                user_id, project_id, role.value,
            )

    async def remove_membership(self, user_id: str, project_id: str) -> bool:
        async with self._db.connection() as conn:
            gone = await conn.fetchval(
                "DELETE FROM memberships WHERE user_id = $1 AND project_id = $2"
                " RETURNING user_id",
                user_id, project_id,
            )
        return gone is not None

    async def roles_of(self, user_id: str) -> dict[str, Role]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT project_id, role FROM memberships WHERE user_id = $1", user_id
            )
        return {r["project_id"]: Role(r["role"]) for r in rows}

    async def members(self, project_id: str) -> list[Membership]:
        return await statements.fetch_all(
            self._db, _membership,
            "SELECT user_id, project_id, role FROM memberships WHERE project_id = $1"
            ' ORDER BY user_id COLLATE "C"',
            project_id,
        )

    async def add_api_key(self, key: ApiKey) -> None:
        await statements.execute(
            self._db, SAVE_KEY,
            key.id, key.project_id, key.key_hash, key.created_at, key.revoked, key.name,
            key.scope.value, key.prefix, key.expires_at, key.last_used_at,
        )

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        return await statements.fetch_one(
            self._db, _key,
            f"SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1 AND NOT revoked",
            key_hash,
        )

    async def list_api_keys(self, project_id: str) -> list[ApiKey]:
        return await statements.fetch_all(
            self._db, _key,
            f"SELECT {KEY_COLUMNS} FROM api_keys WHERE project_id = $1"
            ' ORDER BY created_at, id COLLATE "C"',
            project_id,
        )

    async def touch_api_key(self, key_id: str, at: datetime) -> None:
        async with self._db.connection() as conn:
            await conn.execute(
                "UPDATE api_keys SET last_used_at = $2 WHERE id = $1"
                " AND (last_used_at IS NULL OR last_used_at < $2)",
                key_id, at,
            )

    async def add_token(self, token: Token) -> None:
        await statements.execute(
            self._db, SAVE_TOKEN,
            token.id, token.user_id, token.token_hash, token.created_at, token.revoked,
            token.name, token.prefix, token.expires_at,
        )

    async def find_token(self, token_hash: str) -> Token | None:
        return await statements.fetch_one(
            self._db, _token,
            f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE token_hash = $1 AND NOT revoked",
            token_hash,
        )

    async def list_tokens(self, user_id: str) -> list[Token]:
        return await statements.fetch_all(
            self._db, _token,
            f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE user_id = $1"
            ' ORDER BY created_at, id COLLATE "C"',
            user_id,
        )

    async def revoke_token(self, token_id: str) -> Token | None:
        return await statements.fetch_one(
            self._db, _token,
            f"UPDATE tokens SET revoked = true WHERE id = $1 RETURNING {TOKEN_COLUMNS}",
            token_id,
        )

    async def add_audit(self, event: AuditEvent) -> None:
        async with self._db.connection() as conn:
            await conn.execute(
                "INSERT INTO audit_log (id, at, actor, action, project_id, target, details)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)",
                event.id, event.at, event.actor, event.action, event.project_id, event.target,
                orjson.dumps(dict(event.details)).decode(),
            )

    async def list_audit(self, project_id: str, limit: int = 100) -> list[AuditEvent]:
        return await statements.fetch_all(
            self._db, _event,
            "SELECT id, at, actor, action, project_id, target, details::text AS details"
            " FROM audit_log WHERE project_id = $1"
            " ORDER BY at DESC, seq DESC LIMIT $2",
            project_id, limit,
        )
