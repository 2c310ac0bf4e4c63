"""In-memory projects, users, memberships, API keys and tokens (hashes only)."""

from __future__ import annotations

import attrs

from opspilot.domain.errors import Conflict
from opspilot.domain.tenancy import ApiKey, Project, Token, User


class InMemoryTenancyStore:
    def __init__(self) -> None:
        self.projects: dict[str, Project] = {}
        self.users: dict[str, User] = {}
        self.memberships: set[tuple[str, str]] = set()
        self.api_keys: dict[str, ApiKey] = {}
        self.tokens: dict[str, Token] = {}

    async def add_project(self, project: Project) -> None:
        if any(p.name == project.name for p in self.projects.values()):
            raise Conflict("a project with this name exists", {"field": "name"})
        self.projects[project.id] = project

    async def get_project(self, project_id: str) -> Project | None:
        return self.projects.get(project_id)

    async def add_user(self, user: User) -> None:
        self.users[user.id] = user

    async def add_membership(self, user_id: str, project_id: str) -> None:
        self.memberships.add((user_id, project_id))

    async def projects_of(self, user_id: str) -> frozenset[str]:
        return frozenset(p for u, p in self.memberships if u == user_id)

    async def add_api_key(self, key: ApiKey) -> None:
        self.api_keys[key.key_hash] = key

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        key = self.api_keys.get(key_hash)
        return None if key is None or key.revoked else key

    async def add_token(self, token: Token) -> None:
        self.tokens[token.token_hash] = token

    async def find_token(self, token_hash: str) -> Token | None:
        token = self.tokens.get(token_hash)
        return None if token is None or token.revoked else token

    async def revoke_token(self, token_id: str) -> Token | None:
        for digest, token in self.tokens.items():
            if token.id == token_id:
                self.tokens[digest] = attrs.evolve(token, revoked=True)
                return self.tokens[digest]
        return None
