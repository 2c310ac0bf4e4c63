"""Authentication, project scoping, roles and rate limits for handlers."""

from __future__ import annotations

import contextlib
import hmac
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from opspilot.domain.errors import (
    Forbidden,
    RateLimited,
    ServiceUnavailable,
    Unauthenticated,
    UnsupportedMediaType,
    ValidationError,
)
from opspilot.domain.storable import check_text, problem
from opspilot.domain.tenancy import OPERATOR, IngestIdentity, Principal, Role
from opspilot.entrypoints.api.state import services

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def _authenticating(request: web.Request) -> AsyncIterator[None]:
    """401/403 answers are rate limited per client address (FailureThrottle): a blocked
    address is answered 429 before its credential is looked up."""
    throttle = services(request).auth_failures
    source = request.remote or "unknown"
    if throttle is not None:
        throttle.check(source)
    try:
        yield
    except (Unauthenticated, Forbidden):
        if throttle is not None:
            try:
                await throttle.failed(source)
            except ServiceUnavailable as exc:  # fail open, as the other limits do
                _limiter_failed(request, exc)
        raise


async def ingest_identity(request: web.Request, bearer_key: bool = False) -> IngestIdentity:
    """The project of the request's API key: `X-API-Key`, or (bearer_key, for the standard
    protocols whose clients can only set `Authorization`, e.g. Prometheus' remote_write
    `authorization:` block) `Authorization: Bearer <api key>`."""
    svc = services(request)
    async with _authenticating(request):
        api_key = _credential(request, "X-API-Key")
        if not api_key and bearer_key:
            api_key = bearer_token(request)
        identity = await svc.auth.ingest_identity(api_key)
    limits = svc.rate_limits
    await _limit(request, "ingest", f"ingest:{identity.key_id}", limits.ingest_rate, limits.ingest_burst)
    return identity


async def query_project(
    request: web.Request, headers: tuple[str, ...] = ("X-Project-ID",),
    role: Role = Role.VIEWER,
) -> str:
    """The project a request acts on: a bearer token whose user has at least `role` in the
    project the first of `headers` present names (all of them, when several are sent, must
    agree)."""
    principal, project_id = await project_principal(request, role, headers)
    return project_id


async def project_principal(
    request: web.Request, role: Role = Role.VIEWER, headers: tuple[str, ...] = ("X-Project-ID",)
) -> tuple[Principal, str]:
    async with _authenticating(request):
        principal = await _caller(request)
        named = {h: v for h in headers if (v := request.headers.get(h, "").strip())}
        if not named:
            raise ValidationError(headers[0], "header is required")
        for header, value in named.items():
            check_text(value, header)
        project_id = next(iter(named.values()))
        if any(v != project_id for v in named.values()):
            raise ValidationError(" / ".join(named), "the project headers name different projects")
        principal.require(project_id, role)
    await _query_limit(request, principal)
    return principal, project_id


async def query_principal(request: web.Request) -> Principal:
    """Who a bearer token is (the admin token's is the operator), rate-limited per user; for
    the calls that span projects, and under every project-scoped one."""
    async with _authenticating(request):
        principal = await _caller(request)
    await _query_limit(request, principal)
    return principal


async def _caller(request: web.Request) -> Principal:
    bearer = bearer_token(request)
    if bearer is not None and _is_admin_token(request, bearer):
        return OPERATOR
    return await services(request).auth.principal(bearer)


async def _query_limit(request: web.Request, principal: Principal) -> None:
    limits = services(request).rate_limits
    await _limit(request, "query", f"query:{principal.user_id}", limits.query_rate, limits.query_burst)


async def admin_caller(request: web.Request) -> Principal:
    """The admin surface: absent (404) unless OPSPILOT_ADMIN_TOKEN is set, then only for a
    caller presenting it, with a JSON body, at a bounded rate per client address."""
    svc = services(request)
    if not svc.admin_token:
        raise web.HTTPNotFound()
    limits = svc.rate_limits
    await _limit(request, "admin", f"admin:{request.remote}", limits.admin_rate, limits.admin_burst)
    if request.content_type != "application/json":
        raise UnsupportedMediaType("the admin endpoints take application/json only",
                                   {"field": "Content-Type"})
    bearer = bearer_token(request)
    if bearer is None or not _is_admin_token(request, bearer):
        raise Unauthenticated("the admin endpoints need the admin token", {"field": "Authorization"})
    return OPERATOR


def _is_admin_token(request: web.Request, bearer: str) -> bool:
    expected = services(request).admin_token
    return expected is not None and hmac.compare_digest(bearer.encode(), expected.encode())


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
    except ServiceUnavailable as exc:
        # Failing open: a limiter outage must not stop ingestion; it is counted, logged once
        # per outage, reported by /readyz and alertable (deploy/prometheus/alerts.yml).
        _limiter_failed(request, exc)
        return
    svc.limiter_health.worked(svc.clock.now())
    request["rate_headers"] = {
        "X-RateLimit-Limit": str(decision.limit),
        "X-RateLimit-Remaining": str(decision.remaining),
        "X-RateLimit-Reset": str(max(0, round(decision.reset_after))),
    }
    if not decision.allowed:
        svc.telemetry.refused_by_limiter(scope)
        raise RateLimited(
            f"{scope} rate limit of {rate:g}/s (burst {burst}) exceeded",
            retry_after=decision.retry_after,
            field="X-API-Key" if scope == "ingest" else "Authorization",
        )


def _limiter_failed(request: web.Request, exc: ServiceUnavailable) -> None:
    svc = services(request)
    svc.telemetry.limiter_failed()
    svc.limiter_health.failed(svc.clock.now(), exc.message)


async def add_rate_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in request.get("rate_headers", {}).items():
        response.headers[name] = value
