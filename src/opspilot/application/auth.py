"""Who is asking: API keys for ingestion, bearer tokens (their principal cached briefly) for
everything else.

The principal cache is shared by the API replicas (Redis) but is not an authority: each entry
carries an HMAC-SHA256, under a server secret, of the token hash it is stored for and of its
content. An entry that does not verify (written by someone who can write the cache but does
not hold the secret, or moved to another token's key) is ignored and the store is asked.
Revoking a token, and any change to a user's memberships, deletes the cached principals of
the user's tokens in the shared cache, so every replica sees it on its next request.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from datetime import datetime, timedelta
from typing import Any

from opspilot.domain.errors import Forbidden, RateLimited, ServiceUnavailable, Unauthenticated
from opspilot.domain.ports import Cache, Clock, RateLimiter, TenancyStore
from opspilot.domain.tenancy import (
    ApiKey,
    IngestIdentity,
    KeyScope,
    Principal,
    Project,
    Role,
    Token,
    digest,
)

PRINCIPAL_TTL_SECONDS = 30.0
# A key's last use is written at most this often per key and process: one UPDATE a minute
# instead of one per ingest request.
TOUCH_EVERY = timedelta(minutes=1)
UNKNOWN_TTL_SECONDS = 60.0
MAX_BLOCKED_SOURCES = 10_000


def _principal_key(token_hash: str) -> str:
    return f"principal:{token_hash}"


def _unknown_key(credential_hash: str) -> str:
    return f"unknown-credential:{credential_hash}"


class PrincipalSeal:
    """Signs and checks cached principals with a server secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def seal(self, token_hash: str, principal: Principal, until: datetime) -> bytes:
        body = json.dumps({
            "u": principal.user_id, "t": principal.token_id, "a": principal.admin,
            "r": {p: r.value for p, r in sorted(principal.roles.items())},
            "x": until.timestamp(),
        }, separators=(",", ":"))
        return self._mac(token_hash, body.encode()) + b"." + body.encode()

    def open(self, token_hash: str, entry: bytes, now: datetime) -> Principal | None:
        """The principal if the entry verifies and has not expired, else None."""
        mac, _, body = entry.partition(b".")
        if not hmac.compare_digest(mac, self._mac(token_hash, body)):
            return None
        doc: dict[str, Any] = json.loads(body)
        if now.timestamp() >= doc["x"]:
            return None
        roles = {p: Role(r) for p, r in doc["r"].items()}
        return Principal(doc["u"], roles, bool(doc["a"]), doc["t"])

    def _mac(self, token_hash: str, body: bytes) -> bytes:
        material = token_hash.encode() + b"\n" + body
        return hmac.new(self._secret, material, hashlib.sha256).hexdigest().encode()


class Authenticator:
    """`unknown_ttl`: how long a key or token hash that is unknown, expired or revoked is
    answered 401 from the cache, without a store lookup (a guessed credential costs a cache
    read, not a PostgreSQL query). Credentials are random secrets, never tried before they
    are issued, and an expired or revoked one never becomes usable again, so no usable
    credential is ever behind such an entry."""

    def __init__(
        self, tenancy: TenancyStore, cache: Cache, clock: Clock, seal: PrincipalSeal,
        unknown_ttl: float = UNKNOWN_TTL_SECONDS,
    ) -> None:
        self._tenancy = tenancy
        self._cache = cache
        self._clock = clock
        self._seal = seal
        self._unknown_ttl = unknown_ttl
        self._touched: dict[str, datetime] = {}

    async def ingest_identity(self, api_key: str | None) -> IngestIdentity:
        if not api_key:
            raise Unauthenticated("missing X-API-Key header", {"field": "X-API-Key"})
        key_hash = digest(api_key)
        key = None if await self._known_unknown(key_hash) else \
            await self._tenancy.find_api_key(key_hash)
        now = self._clock.now()
        if key is None or not key.usable_at(now):
            await self._remember_unknown(key_hash)
            raise Unauthenticated("unknown, expired or revoked API key", {"field": "X-API-Key"})
        if key.scope is not KeyScope.INGEST:
            raise Forbidden(f"this key's scope is {key.scope}", {"field": "X-API-Key"})
        await self._touch(key, now)
        return IngestIdentity(key.project_id, key.id)

    async def _touch(self, key: ApiKey, now: datetime) -> None:
        last = self._touched.get(key.id)
        if last is not None and now - last < TOUCH_EVERY:
            return
        self._touched[key.id] = now
        await self._tenancy.touch_api_key(key.id, now)

    async def principal(self, bearer: str | None) -> Principal:
        if not bearer:
            raise Unauthenticated("missing bearer token", {"field": "Authorization"})
        token_hash = digest(bearer)
        now = self._clock.now()
        cached = await self._cached(token_hash, now)
        if cached is not None:
            return cached
        token = None if await self._known_unknown(token_hash) else \
            await self._tenancy.find_token(token_hash)
        if token is None or not token.usable_at(now):
            await self._remember_unknown(token_hash)
            raise Unauthenticated("unknown, expired or revoked token", {"field": "Authorization"})
        user = await self._tenancy.get_user(token.user_id)
        roles = await self._tenancy.roles_of(token.user_id)
        principal = Principal(token.user_id, roles, user.admin if user else False, token.id)
        await self._remember(token, principal, now)
        return principal

    async def _known_unknown(self, credential_hash: str) -> bool:
        try:
            return await self._cache.get(_unknown_key(credential_hash)) is not None
        except ServiceUnavailable:
            return False

    async def _remember_unknown(self, credential_hash: str) -> None:
        with contextlib.suppress(ServiceUnavailable):
            await self._cache.set(_unknown_key(credential_hash), b"1", self._unknown_ttl)

    async def projects(self, principal: Principal) -> list[Project]:
        """The principal's projects, by name (a membership whose project is gone is left out)."""
        found = [await self._tenancy.get_project(pid) for pid in sorted(principal.project_ids)]
        return sorted((p for p in found if p is not None), key=lambda p: (p.name, p.id))

    async def _cached(self, token_hash: str, now: datetime) -> Principal | None:
        try:
            entry = await self._cache.get(_principal_key(token_hash))
        except ServiceUnavailable:
            return None
        return self._seal.open(token_hash, entry, now) if entry is not None else None

    async def _remember(self, token: Token, principal: Principal, now: datetime) -> None:
        until = now + timedelta(seconds=PRINCIPAL_TTL_SECONDS)
        if token.expires_at is not None:
            until = min(until, token.expires_at)
        ttl = (until - now).total_seconds()
        if ttl <= 0:
            return
        # A cache outage costs a store lookup per request, never a refusal.
        with contextlib.suppress(ServiceUnavailable):
            await self._cache.set(
                _principal_key(token.token_hash), self._seal.seal(token.token_hash, principal, until),
                ttl,
            )

    async def forget_user(self, user_id: str) -> None:
        """Drop the cached principals of every token of the user (their roles changed).

        Strict: if the cache cannot be reached the caller must know, since a principal left
        there would live on for up to PRINCIPAL_TTL_SECONDS."""
        for token in await self._tenancy.list_tokens(user_id):
            await self._cache.delete(_principal_key(token.token_hash))

    async def revoke(self, token_id: str) -> Token | None:
        """Revoke at once: the token row and its cached principal both go."""
        token = await self._tenancy.revoke_token(token_id)
        if token is None:
            return None
        await self._cache.delete(_principal_key(token.token_hash))
        return token


class FailureThrottle:
    """401/403 answers per source (the client address): each costs a token from the
    source's bucket; once it is empty, that source is answered 429 (Retry-After) before any
    credential is looked up, until the bucket refills. The block is remembered in this
    process, so a blocked source costs no I/O at all; the bucket itself is shared through
    the limiter (Redis with several API processes). A limiter outage fails open."""

    def __init__(self, limiter: RateLimiter, clock: Clock, rate: float, burst: int,
                 enabled: bool = True) -> None:
        self._limiter = limiter
        self._clock = clock
        self._rate = rate
        self._burst = burst
        self.enabled = enabled
        self._blocked: dict[str, datetime] = {}

    def check(self, source: str) -> None:
        until = self._blocked.get(source)
        if until is None:
            return
        left = (until - self._clock.now()).total_seconds()
        if left <= 0:
            del self._blocked[source]
            return
        raise self._refusal(left)

    async def failed(self, source: str) -> None:
        """Count one failure; raises RateLimited when the source has none left."""
        if not self.enabled:
            return
        decision = await self._limiter.hit(f"auth-failures:{source}", self._rate, self._burst)
        if decision.allowed:
            return
        if len(self._blocked) >= MAX_BLOCKED_SOURCES:  # bounded: forget the oldest entry
            self._blocked.pop(next(iter(self._blocked)))
        self._blocked[source] = self._clock.now() + timedelta(seconds=decision.retry_after)
        raise self._refusal(decision.retry_after)

    def _refusal(self, retry_after: float) -> RateLimited:
        return RateLimited(
            f"too many failed authentications from this address ({self._rate:g}/s, burst"
            f" {self._burst}); retry later", retry_after=retry_after, field="remote",
        )
