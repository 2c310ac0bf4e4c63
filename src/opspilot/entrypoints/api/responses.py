"""Success answers: `json_answer`, the one way a handler writes a JSON body, and the shapes of
the API's own resources (ingest, system, accounts), each declared once beside the function
that renders it. The query answers are declared the same way in application/rendering.py,
the alerting resources in responses_alerts.py.

A shape is a closed TypedDict (`closed`): the OpenAPI document is generated from it
(openapi.py), the renderer builds a plain dict that mypy holds to it, and the unit tests
hold every served answer to the generated schema (tests/unit/api/test_response_schemas.py).
Adding a field is one edit to the shape and its renderer, side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, NotRequired

from aiohttp import web
from pydantic import Field
from typing_extensions import TypedDict

from opspilot.application.accounts import Credentials
from opspilot.application.rendering import Instant, closed, to_json
from opspilot.domain.tenancy import (
    ApiKey,
    AuditEvent,
    KeyScope,
    Membership,
    Principal,
    Project,
    Role,
    Token,
    User,
)


def json_answer(doc: Any, status: int = 200) -> web.Response:
    """A JSON answer, compact and encoded by orjson (`to_json`) like the cached metric
    answers, which arrive here already encoded (bytes are sent as they are)."""
    body = doc if isinstance(doc, bytes) else to_json(doc)
    return web.Response(body=body, status=status, content_type="application/json")


# -- ingest, system ------------------------------------------------------------------------


@closed
class IngestAccepted(TypedDict):
    """202: the batch is durably queued; workers write it shortly after."""

    accepted: Annotated[int, Field(description="items accepted (all of the request's)")]
    batch_id: Annotated[str, Field(description="id of the queued batch; log ids start with it")]


def accepted_doc(count: int, batch_id: str) -> IngestAccepted:
    return {"accepted": count, "batch_id": batch_id}


# OTLP/HTTP answers in the OTLP JSON encoding (protobuf's JSON mapping: lowerCamelCase,
# int64 as a decimal string, fields at their zero value left out). Rendered by
# google.protobuf.json_format (otlp/body.py), described here.
_INT64 = r"^[0-9]+$"


@closed
class OtlpMetricsPartialSuccess(TypedDict):
    rejectedDataPoints: Annotated[str, Field(
        pattern=_INT64, description="data points refused (int64 as a string)")]
    errorMessage: Annotated[str, Field(
        description="the first refused fields and why (`<field>: <reason>`)")]


@closed
class OtlpMetricsAnswer(TypedDict):
    """200: ExportMetricsServiceResponse. Empty when every data point was kept; with
    `partialSuccess` when some were refused (the others are kept; do not retry)."""

    partialSuccess: NotRequired[OtlpMetricsPartialSuccess]


@closed
class OtlpLogsPartialSuccess(TypedDict):
    rejectedLogRecords: Annotated[str, Field(
        pattern=_INT64, description="log records refused (int64 as a string)")]
    errorMessage: Annotated[str, Field(
        description="the first refused fields and why (`<field>: <reason>`)")]


@closed
class OtlpLogsAnswer(TypedDict):
    """200: ExportLogsServiceResponse. Empty when every log record was kept; with
    `partialSuccess` when some were refused (the others are kept; do not retry)."""

    partialSuccess: NotRequired[OtlpLogsPartialSuccess]


@closed
class Health(TypedDict):
    status: Literal["ok"]


HEALTHY: Health = {"status": "ok"}


@closed
class Readiness(TypedDict):
    """200 when every check is "ok", else 503 with the same shape."""

    status: Literal["ready", "degraded", "unready"]
    checks: Annotated[dict[str, str], Field(description='adapter → "ok" or "failed: <reason>"')]


def readiness_doc(status: Literal["ready", "degraded", "unready"],
                  checks: dict[str, str]) -> Readiness:
    return {"status": status, "checks": checks}


@closed
class MeProject(TypedDict):
    id: str
    name: str
    role: Annotated[Role, Field(description="what the user may do there (docs/security.md)")]


@closed
class Me(TypedDict):
    """Who the bearer token is: its user and the projects it may query."""

    user_id: str
    projects: Annotated[list[MeProject], Field(description="by name; use an id as "
                                                           "X-Project-ID")]


def me_doc(principal: Principal, projects: Sequence[Project]) -> Me:
    return {"user_id": principal.user_id,
            "projects": [{"id": p.id, "name": p.name, "role": principal.roles[p.id]}
                         for p in projects]}


# -- accounts ------------------------------------------------------------------------------


@closed
class ProjectCredentials(TypedDict):
    """Shown once: only hashes of the API key and token are stored."""

    project_id: str
    name: str
    api_key: Annotated[str, Field(description="for X-API-Key on ingest")]
    token: Annotated[str | None, Field(description="the owner's bearer token for queries (null "
                                                   "when the owner is the caller, who has one)")]
    owner_id: str


def credentials_doc(made: Credentials) -> ProjectCredentials:
    return {"project_id": made.project_id, "name": made.project_name, "api_key": made.api_key,
            "token": made.token, "owner_id": made.user_id}


@closed
class UserCreated(TypedDict):
    id: str
    email: str
    admin: bool
    token: Annotated[str, Field(description="the user's first bearer token, shown once")]


def user_created_doc(user: User, secret: str) -> UserCreated:
    return {"id": user.id, "email": user.name, "admin": user.admin, "token": secret}


@closed
class Member(TypedDict):
    user_id: str
    email: str
    role: Role


def member_doc(membership: Membership, user: User) -> Member:
    return {"user_id": user.id, "email": user.name, "role": membership.role}


@closed
class MetricRetentionDoc(TypedDict):
    values_days: Annotated[int | None, Field(description="raw metric values kept (days); "
                                             "null: the server's OPSPILOT_METRIC_RETENTION_DAYS")]
    summary_days: Annotated[int | None, Field(
        description="hourly summaries kept (days); null: the server's "
                    "OPSPILOT_METRIC_SUMMARY_RETENTION_DAYS")]


@closed
class ProjectSettings(TypedDict):
    id: str
    name: str
    created_at: Instant
    metric_retention: MetricRetentionDoc


def project_doc(project: Project) -> ProjectSettings:
    retention = project.metric_retention
    return {"id": project.id, "name": project.name, "created_at": project.created_at,
            "metric_retention": {"values_days": retention.values_days,
                                 "summary_days": retention.summary_days}}


@closed
class MemberList(TypedDict):
    members: list[Member]


def members_doc(found: Sequence[tuple[Membership, User]]) -> MemberList:
    return {"members": [member_doc(m, u) for m, u in found]}


@closed
class MemberInvited(Member):
    token: Annotated[str | None, Field(description="a first bearer token when the invitation "
                                                   "created the user (shown once), else null")]


def invited_doc(membership: Membership, user: User, secret: str | None) -> MemberInvited:
    return {**member_doc(membership, user), "token": secret}


@closed
class TokenInfo(TypedDict):
    id: str
    name: str
    prefix: Annotated[str, Field(description="the secret's first characters, to tell tokens "
                                             "apart")]
    created_at: Instant
    expires_at: Instant | None
    status: Literal["active", "expired", "revoked"]


def token_doc(token: Token, now: datetime) -> TokenInfo:
    status: Literal["active", "expired", "revoked"] = (
        "revoked" if token.revoked else "active" if token.usable_at(now) else "expired")
    return {"id": token.id, "name": token.name, "prefix": token.prefix,
            "created_at": token.created_at, "expires_at": token.expires_at, "status": status}


@closed
class TokenList(TypedDict):
    tokens: list[TokenInfo]


def tokens_doc(tokens: Sequence[Token], now: datetime) -> TokenList:
    return {"tokens": [token_doc(t, now) for t in tokens]}


@closed
class TokenCreated(TokenInfo):
    token: Annotated[str, Field(description="the secret, shown once")]


def token_created_doc(token: Token, secret: str, now: datetime) -> TokenCreated:
    return {**token_doc(token, now), "token": secret}


@closed
class KeyInfo(TypedDict):
    id: str
    name: str
    scope: KeyScope
    prefix: Annotated[str, Field(description="the secret's first characters, to tell keys "
                                             "apart")]
    created_at: Instant
    expires_at: Annotated[Instant | None, Field(description="set on a rotated key: its grace "
                                                            "ends then")]
    last_used_at: Annotated[Instant | None, Field(description="to the minute")]
    status: Literal["active", "grace", "expired", "revoked"]


def key_doc(key: ApiKey, now: datetime) -> KeyInfo:
    status: Literal["active", "grace", "expired", "revoked"]
    if key.revoked:
        status = "revoked"
    elif not key.usable_at(now):
        status = "expired"
    else:
        status = "active" if key.expires_at is None else "grace"
    return {"id": key.id, "name": key.name, "scope": key.scope, "prefix": key.prefix,
            "created_at": key.created_at, "expires_at": key.expires_at,
            "last_used_at": key.last_used_at, "status": status}


@closed
class KeyList(TypedDict):
    keys: list[KeyInfo]


def keys_doc(keys: Sequence[ApiKey], now: datetime) -> KeyList:
    return {"keys": [key_doc(k, now) for k in keys]}


@closed
class KeyCreated(KeyInfo):
    api_key: Annotated[str, Field(description="the secret, shown once")]


def key_created_doc(key: ApiKey, secret: str, now: datetime) -> KeyCreated:
    return {**key_doc(key, now), "api_key": secret}


@closed
class AuditEntry(TypedDict):
    id: str
    at: Instant
    actor: Annotated[str, Field(description="a user id, or `operator` (admin token or CLI)")]
    action: str
    target: str
    details: dict[str, str]


def audit_doc(event: AuditEvent) -> AuditEntry:
    return {"id": event.id, "at": event.at, "actor": event.actor, "action": event.action,
            "target": event.target, "details": dict(event.details)}


@closed
class AuditLog(TypedDict):
    events: Annotated[list[AuditEntry], Field(description="newest first")]


def audit_log_doc(events: Sequence[AuditEvent]) -> AuditLog:
    return {"events": [audit_doc(e) for e in events]}
