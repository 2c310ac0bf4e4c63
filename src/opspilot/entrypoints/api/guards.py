"""Authentication, project scoping and rate limits for handlers."""

from __future__ import annotations

import ipaddress
import logging

from aiohttp import web

from opspilot.domain.errors import (
    Forbidden,
    RateLimited,
    ServiceUnavailable,
    Unauthenticated,
    ValidationError,
)
from opspilot.domain.storable import check_text, problem
from opspilot.domain.tenancy import IngestIdentity, Principal
from opspilot.entrypoints.api.state import services

log = logging.getLogger(__name__)


async def ingest_identity(request: web.Request) -> IngestIdentity:
    svc = services(request)
    identity = await svc.auth.ingest_identity(_credential(request, "X-API-Key"))
    limits = svc.rate_limits
    await _limit(request, "ingest", f"ingest:{identity.key_id}", limits.ingest_rate, limits.ingest_burst)
    return identity


async def query_project(
    request: web.Request, headers: tuple[str, ...] = ("X-Project-ID",)
) -> str:
    """The project a query acts on: a bearer token whose user is a member of the project the
    first of `headers` present names (all of them, when several are sent, must agree)."""
    svc = services(request)
    principal = await svc.auth.principal(bearer_token(request))
    named = {h: v for h in headers if (v := request.headers.get(h, "").strip())}
    if not named:
        raise ValidationError(headers[0], "header is required")
    for header, value in named.items():
        check_text(value, header)
    project_id = next(iter(named.values()))
    if any(v != project_id for v in named.values()):
        raise ValidationError(" / ".join(named), "the project headers name different projects")
    principal.require_member(project_id)
    await _query_limit(request, principal)
    return project_id


async def query_principal(request: web.Request) -> Principal:
    """Who a bearer token is, for the calls that span its projects (rate limited alike)."""
    principal = await services(request).auth.principal(bearer_token(request))
    await _query_limit(request, principal)
    return principal


async def _query_limit(request: web.Request, principal: Principal) -> None:
    limits = services(request).rate_limits
    await _limit(request, "query", f"query:{principal.user_id}", limits.query_rate, limits.query_burst)


def bearer_token(request: web.Request) -> str | None:
    header = _credential(request, "Authorization") or ""
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _credential(request: web.Request, name: str) -> str | None:
    """A credential header as text. aiohttp decodes header bytes that are not UTF-8 into
    lone surrogates (`surrogateescape`); no key or token we issue contains them, so such a
    header is refused as a wrong credential (401) before anything hashes or looks it up."""
    value = request.headers.get(name)
    if value is not None and problem(value) is not None:
        raise Unauthenticated(f"{name} is not a credential this server issued", {"field": name})
    return value


async def _limit(request: web.Request, scope: str, key: str, rate: float, burst: int) -> None:
    svc = services(request)
    if not svc.rate_limits.enabled:
        return
    try:
        decision = await svc.limiter.hit(key, rate, burst)
    except ServiceUnavailable:
        # Failing open: a limiter outage must not stop ingestion; it is counted and alertable.
        svc.telemetry.limiter_failures.inc()
        return
    request["rate_headers"] = {
        "X-RateLimit-Limit": str(decision.limit),
        "X-RateLimit-Remaining": str(decision.remaining),
        "X-RateLimit-Reset": str(max(0, round(decision.reset_after))),
    }
    if not decision.allowed:
        svc.telemetry.rate_limited.labels(scope).inc()
        raise RateLimited(
            f"{scope} rate limit of {rate:g}/s (burst {burst}) exceeded",
            retry_after=decision.retry_after, field="X-API-Key" if scope == "ingest" else "Authorization",
        )


def require_loopback(request: web.Request) -> None:
    remote = request.remote or ""
    try:
        loopback = ipaddress.ip_address(remote.split("%")[0]).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise Forbidden("admin endpoints answer loopback callers only", {"field": "remote"})


async def add_rate_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in request.get("rate_headers", {}).items():
        response.headers[name] = value
