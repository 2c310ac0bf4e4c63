"""Who is asking: API keys for ingestion, bearer tokens (cached briefly) for queries."""

from __future__ import annotations

import contextlib
import json

from opspilot.domain.errors import ServiceUnavailable, Unauthenticated
from opspilot.domain.ports import Cache, TenancyStore
from opspilot.domain.tenancy import IngestIdentity, Principal, Project, digest

PRINCIPAL_TTL_SECONDS = 30.0


def _principal_key(token_hash: str) -> str:
    return f"principal:{token_hash}"


class Authenticator:
    def __init__(self, tenancy: TenancyStore, cache: Cache) -> None:
        self._tenancy = tenancy
        self._cache = cache

    async def ingest_identity(self, api_key: str | None) -> IngestIdentity:
        if not api_key:
            raise Unauthenticated("missing X-API-Key header", {"field": "X-API-Key"})
        key = await self._tenancy.find_api_key(digest(api_key))
        if key is None:
            raise Unauthenticated("unknown or revoked API key", {"field": "X-API-Key"})
        return IngestIdentity(key.project_id, key.id)

    async def principal(self, bearer: str | None) -> Principal:
        if not bearer:
            raise Unauthenticated("missing bearer token", {"field": "Authorization"})
        token_hash = digest(bearer)
        cached = await self._cached(token_hash)
        if cached is not None:
            user_id, projects = json.loads(cached)
            return Principal(user_id, frozenset(projects))
        token = await self._tenancy.find_token(token_hash)
        if token is None:
            raise Unauthenticated("unknown or revoked token", {"field": "Authorization"})
        principal = Principal(token.user_id, await self._tenancy.projects_of(token.user_id))
        body = json.dumps([principal.user_id, sorted(principal.project_ids)]).encode()
        # A cache outage costs a store lookup per request, never a refusal.
        with contextlib.suppress(ServiceUnavailable):
            await self._cache.set(_principal_key(token_hash), body, PRINCIPAL_TTL_SECONDS)
        return principal

    async def projects(self, principal: Principal) -> list[Project]:
        """The principal's projects, by name (a membership whose project is gone is left out)."""
        found = [await self._tenancy.get_project(pid) for pid in sorted(principal.project_ids)]
        return sorted((p for p in found if p is not None), key=lambda p: (p.name, p.id))

    async def _cached(self, token_hash: str) -> bytes | None:
        try:
            return await self._cache.get(_principal_key(token_hash))
        except ServiceUnavailable:
            return None

    async def revoke(self, token_id: str) -> bool:
        """Revoke at once: the token row and its cached principal both go."""
        token = await self._tenancy.revoke_token(token_id)
        if token is None:
            return False
        # Strict: if the cached principal cannot be dropped, the caller must know (it would
        # live on for up to PRINCIPAL_TTL_SECONDS).
        await self._cache.delete(_principal_key(token.token_hash))
        return True
