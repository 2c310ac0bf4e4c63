"""Creating a project with its first API key, user and token (secrets shown once)."""

from __future__ import annotations

import secrets

import attrs

from opspilot.domain.errors import ValidationError
from opspilot.domain.ports import Clock, IdGenerator, TenancyStore
from opspilot.domain.tenancy import (
    API_KEY_PREFIX,
    TOKEN_PREFIX,
    ApiKey,
    Project,
    Token,
    User,
    digest,
)


@attrs.frozen
class Credentials:
    project_id: str
    project_name: str
    api_key: str
    token: str
    user_id: str


class ProjectProvisioner:
    def __init__(self, tenancy: TenancyStore, clock: Clock, ids: IdGenerator) -> None:
        self._tenancy = tenancy
        self._clock = clock
        self._ids = ids

    async def create_project(self, name: str, user_name: str = "admin") -> Credentials:
        name = name.strip()
        if not 1 <= len(name) <= 100:
            raise ValidationError("name", "1-100 characters")
        now = self._clock.now()
        project = Project(self._ids.new_id(), name, now)
        user = User(self._ids.new_id(), f"{user_name}@{name}", now)
        api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        await self._tenancy.add_project(project)
        await self._tenancy.add_user(user)
        await self._tenancy.add_membership(user.id, project.id)
        await self._tenancy.add_api_key(ApiKey(self._ids.new_id(), project.id, digest(api_key), now))
        await self._tenancy.add_token(Token(self._ids.new_id(), user.id, digest(token), now))
        return Credentials(project.id, project.name, api_key, token, user.id)
