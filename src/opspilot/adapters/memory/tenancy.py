"""In-memory projects, users, memberships, API keys, tokens (hashes only) and audit log."""

from __future__ import annotations

from datetime import datetime

import attrs

from opspilot.domain.errors import Conflict
from opspilot.domain.tenancy import (
    ApiKey,
    AuditEvent,
    Membership,
    MetricRetention,
    Project,
    Role,
    Token,
    User,
)


class InMemoryTenancyStore:
    def __init__(self) -> None:
        self.projects: dict[str, Project] = {}
        self.users: dict[str, User] = {}
        self.memberships: dict[tuple[str, str], Role] = {}
        self.api_keys: dict[str, ApiKey] = {}
        self.tokens: dict[str, Token] = {}
        self.audit: list[AuditEvent] = []

    async def add_project(self, project: Project) -> None:
        if any(p.name == project.name for p in self.projects.values()):
            raise Conflict("a project with this name exists", {"field": "name"})
        self.projects[project.id] = project

    async def get_project(self, project_id: str) -> Project | None:
        return self.projects.get(project_id)

    async def set_metric_retention(self, project_id: str, retention: MetricRetention) -> bool:
        project = self.projects.get(project_id)
        if project is None:
            return False
        self.projects[project_id] = attrs.evolve(project, metric_retention=retention)
        return True

    async def metric_retentions(self) -> dict[str, MetricRetention]:
        return {p.id: p.metric_retention for p in self.projects.values()
                if not p.metric_retention.is_default}

    async def add_user(self, user: User) -> None:
        if any(u.name == user.name and u.id != user.id for u in self.users.values()):
            raise Conflict("a user with this e-mail exists", {"field": "email"})
        self.users[user.id] = user

    async def get_user(self, user_id: str) -> User | None:
        return self.users.get(user_id)

    async def find_user(self, name: str) -> User | None:
        return next((u for u in self.users.values() if u.name == name), None)

    async def add_membership(self, user_id: str, project_id: str, role: Role = Role.OWNER) -> None:
        self.memberships[(user_id, project_id)] = role

    async def remove_membership(self, user_id: str, project_id: str) -> bool:
        return self.memberships.pop((user_id, project_id), None) is not None

    async def roles_of(self, user_id: str) -> dict[str, Role]:
        return {p: role for (u, p), role in self.memberships.items() if u == user_id}

    async def members(self, project_id: str) -> list[Membership]:
        found = [Membership(u, p, role) for (u, p), role in self.memberships.items()
                 if p == project_id]
        return sorted(found, key=lambda m: m.user_id)

    async def add_api_key(self, key: ApiKey) -> None:
        self.api_keys[key.key_hash] = key

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        key = self.api_keys.get(key_hash)
        return None if key is None or key.revoked else key

    async def list_api_keys(self, project_id: str) -> list[ApiKey]:
        keys = [k for k in self.api_keys.values() if k.project_id == project_id]
        return sorted(keys, key=lambda k: (k.created_at, k.id))

    async def touch_api_key(self, key_id: str, at: datetime) -> None:
        for key_hash, key in self.api_keys.items():
            if key.id == key_id and (key.last_used_at is None or key.last_used_at < at):
                self.api_keys[key_hash] = attrs.evolve(key, last_used_at=at)

    async def add_token(self, token: Token) -> None:
        self.tokens[token.token_hash] = token

    async def find_token(self, token_hash: str) -> Token | None:
        token = self.tokens.get(token_hash)
        return None if token is None or token.revoked else token

    async def list_tokens(self, user_id: str) -> list[Token]:
        tokens = [t for t in self.tokens.values() if t.user_id == user_id]
        return sorted(tokens, key=lambda t: (t.created_at, t.id))

    async def revoke_token(self, token_id: str) -> Token | None:
        for digest, token in self.tokens.items():
            if token.id == token_id:
                self.tokens[digest] = attrs.evolve(token, revoked=True)
                return self.tokens[digest]
        return None

    async def add_audit(self, event: AuditEvent) -> None:
        self.audit.append(event)

    async def list_audit(self, project_id: str, limit: int = 100) -> list[AuditEvent]:
        newest_first = [e for e in reversed(self.audit) if e.project_id == project_id]
        # stable: events of the same instant stay newest first
        return sorted(newest_first, key=lambda e: e.at, reverse=True)[:limit]
