"""Accounts: /api/admin/* (admin token), /api/projects, members, personal tokens, API keys and
the audit log. Roles are checked by the use cases (application/accounts.py); see
docs/security.md for the table."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from aiohttp import web
from pydantic import BeforeValidator, Field, StringConstraints
from pydantic import Strict as StrictMode

from opspilot.domain.errors import ValidationError
from opspilot.domain.tenancy import (
    MAX_RETENTION_DAYS,
    KeyScope,
    MetricRetention,
    Principal,
    Role,
)
from opspilot.domain.timewindow import parse_duration
from opspilot.entrypoints.api import openapi
from opspilot.entrypoints.api import responses as r
from opspilot.entrypoints.api.guards import admin_caller, project_principal, query_principal
from opspilot.entrypoints.api.parsing import json_body, query_params
from opspilot.entrypoints.api.responses import json_answer
from opspilot.entrypoints.api.schemas import CreateProjectBody, Email, Flag, Strict
from opspilot.entrypoints.api.state import services

Label = Annotated[str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True)]
Duration = Annotated[str, StringConstraints(pattern=r"^[1-9]\d{0,5}[smhd]$")]
MaybeZeroDuration = Annotated[str, StringConstraints(pattern=r"^(0|[1-9]\d{0,5}[smhd])$")]


class CreateUserBody(Strict):
    email: Email
    admin: Flag = Field(default=False, description="may create users and projects")


class InviteBody(Strict):
    email: Email
    role: Role = Role.VIEWER


class RoleBody(Strict):
    role: Role


class TokenBody(Strict):
    name: Label
    ttl: Duration = Field(default="90d", description="e.g. 1h, 30d; 5 minutes to 366 days")


class KeyBody(Strict):
    name: Label
    scope: KeyScope = KeyScope.INGEST


class RotateBody(Strict):
    grace: MaybeZeroDuration = Field(
        default="24h", description="how long the old key keeps working (0 to 7d)")


def _integral(value: Any) -> Any:
    """300.0 is the integer 300 to JSON Schema (and to the document's `integer`); strict
    pydantic refused it (found by the live fuzzing). Other floats stay refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# the bounds inside the annotation, so that the schema keeps them as minimum/maximum
Days = Annotated[int, Field(ge=1, le=MAX_RETENTION_DAYS), BeforeValidator(_integral), StrictMode()]


class RetentionBody(Strict):
    values_days: Days | None = Field(
        default=None,
        description="days raw metric values are kept; null: the server's setting")
    summary_days: Days | None = Field(
        default=None,
        description="days hourly summaries are kept (at least values_days); null: the server's")


class ProjectPatchBody(Strict):
    metric_retention: RetentionBody


class AuditParams(Strict):
    limit: int = Field(default=100, ge=1, le=1000)


def _now(request: web.Request) -> datetime:
    return services(request).clock.now()


def _path(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if not 1 <= len(value) <= 100:
        raise ValidationError(name, "1-100 characters")
    return value


def _duration(text: str, field: str) -> timedelta:
    return timedelta(0) if text == "0" else parse_duration(text, field)


# -- admin surface and projects ----------------------------------------------------------------


async def admin_create_project(request: web.Request) -> web.Response:
    return await _create_project(request, await admin_caller(request))


async def admin_create_user(request: web.Request) -> web.Response:
    actor = await admin_caller(request)
    body = await json_body(request, CreateUserBody)
    user, token = await services(request).accounts.create_user(body.email, body.admin, actor)
    return json_answer(r.user_created_doc(user, token.secret), 201)


async def create_project(request: web.Request) -> web.Response:
    return await _create_project(request, await query_principal(request))


async def _create_project(request: web.Request, actor: Principal) -> web.Response:
    body = await json_body(request, CreateProjectBody)
    made = await services(request).accounts.create_project(body.name, body.owner, actor)
    return json_answer(r.credentials_doc(made), 201)


async def get_project(request: web.Request) -> web.Response:
    actor = await query_principal(request)
    found = await services(request).accounts.project(actor, _path(request, "project_id"))
    return json_answer(r.project_doc(found))


async def change_project(request: web.Request) -> web.Response:
    actor = await query_principal(request)
    body = await json_body(request, ProjectPatchBody)
    retention = MetricRetention(body.metric_retention.values_days,
                                body.metric_retention.summary_days)
    changed = await services(request).accounts.set_metric_retention(
        actor, _path(request, "project_id"), retention)
    return json_answer(r.project_doc(changed))


# -- members -------------------------------------------------------------------------------------


async def list_members(request: web.Request) -> web.Response:
    actor = await query_principal(request)
    found = await services(request).accounts.members(actor, _path(request, "project_id"))
    return json_answer(r.members_doc(found))


async def invite_member(request: web.Request) -> web.Response:
    actor = await query_principal(request)
    body = await json_body(request, InviteBody)
    made = await services(request).accounts.invite(
        actor, _path(request, "project_id"), body.email, body.role)
    secret = made.token.secret if made.token else None
    return json_answer(r.invited_doc(made.membership, made.user, secret), 201)


async def change_member(request: web.Request) -> web.Response:
    actor = await query_principal(request)
    body = await json_body(request, RoleBody)
    accounts = services(request).accounts
    project_id, user_id = _path(request, "project_id"), _path(request, "user_id")
    await accounts.change_role(actor, project_id, user_id, body.role)
    found = await accounts.members(actor, project_id)
    membership, user = next((m, u) for m, u in found if u.id == user_id)
    return json_answer(r.member_doc(membership, user))


async def remove_member(request: web.Request) -> web.Response:
    actor = await query_principal(request)
    await services(request).accounts.remove_member(
        actor, _path(request, "project_id"), _path(request, "user_id"))
    return web.Response(status=204)


async def audit_log(request: web.Request) -> web.Response:
    actor = await query_principal(request)
    params = query_params(request, AuditParams)
    events = await services(request).accounts.audit_log(
        actor, _path(request, "project_id"), params.limit)
    return json_answer(r.audit_log_doc(events))


# -- personal tokens -----------------------------------------------------------------------------


async def create_token(request: web.Request) -> web.Response:
    actor = await query_principal(request)
    body = await json_body(request, TokenBody)
    made = await services(request).accounts.create_token(
        actor, body.name, _duration(body.ttl, "ttl"))
    return json_answer(r.token_created_doc(made.token, made.secret, _now(request)), 201)


async def list_tokens(request: web.Request) -> web.Response:
    actor = await query_principal(request)
    tokens = await services(request).accounts.list_tokens(actor)
    return json_answer(r.tokens_doc(tokens, _now(request)))


async def revoke_token(request: web.Request) -> web.Response:
    actor = await query_principal(request)
    await services(request).accounts.revoke_token(actor, _path(request, "token_id"))
    return web.Response(status=204)


# -- API keys ------------------------------------------------------------------------------------


async def create_key(request: web.Request) -> web.Response:
    actor, project_id = await project_principal(request, Role.ADMIN)
    body = await json_body(request, KeyBody)
    made = await services(request).accounts.create_key(actor, project_id, body.name, body.scope)
    return json_answer(r.key_created_doc(made.key, made.secret, _now(request)), 201)


async def list_keys(request: web.Request) -> web.Response:
    actor, project_id = await project_principal(request, Role.ADMIN)
    keys = await services(request).accounts.list_keys(actor, project_id)
    return json_answer(r.keys_doc(keys, _now(request)))


async def rotate_key(request: web.Request) -> web.Response:
    actor, project_id = await project_principal(request, Role.ADMIN)
    body = await json_body(request, RotateBody)
    made = await services(request).accounts.rotate_key(
        actor, project_id, _path(request, "key_id"), _duration(body.grace, "grace"))
    return json_answer(r.key_created_doc(made.key, made.secret, _now(request)), 201)


async def revoke_key(request: web.Request) -> web.Response:
    actor, project_id = await project_principal(request, Role.ADMIN)
    await services(request).accounts.revoke_key(actor, project_id, _path(request, "key_id"))
    return web.Response(status=204)


def register(app: web.Application) -> None:
    add = app.router.add_route
    add("POST", "/api/admin/projects", admin_create_project)
    add("POST", "/api/admin/users", admin_create_user)
    add("POST", "/api/projects", create_project)
    add("GET", "/api/projects/{project_id}", get_project)
    add("PATCH", "/api/projects/{project_id}", change_project)
    add("GET", "/api/projects/{project_id}/members", list_members)
    add("POST", "/api/projects/{project_id}/members", invite_member)
    add("PATCH", "/api/projects/{project_id}/members/{user_id}", change_member)
    add("DELETE", "/api/projects/{project_id}/members/{user_id}", remove_member)
    add("GET", "/api/projects/{project_id}/audit", audit_log)
    add("POST", "/api/tokens", create_token)
    add("GET", "/api/tokens", list_tokens)
    add("DELETE", "/api/tokens/{token_id}", revoke_token)
    add("POST", "/api/keys", create_key)
    add("GET", "/api/keys", list_keys)
    add("POST", "/api/keys/{key_id}/rotate", rotate_key)
    add("DELETE", "/api/keys/{key_id}", revoke_key)


_Op = openapi.Operation
# The admin token acts as the operator, who is no user: it has no personal tokens.
_NOT_PERSONAL = "the admin token has no personal tokens (400 naming `user`)"
_MEMBERS = "/api/projects/{project_id}/members"
OPERATIONS = (
    _Op("post", "/api/admin/projects", "Create a project (admin token)", "admin",
        body=CreateProjectBody, success=201, conflict="a project with this name exists",
        response=r.ProjectCredentials),
    _Op("post", "/api/admin/users", "Create a user (admin token)", "admin",
        body=CreateUserBody, success=201, conflict="a user with this e-mail exists",
        response=r.UserCreated),
    _Op("post", "/api/projects", "Create a project (administrators)", "token",
        body=CreateProjectBody, success=201, conflict="a project with this name exists",
        response=r.ProjectCredentials),
    _Op("get", "/api/projects/{project_id}", "The project and its settings (viewer+)", "token",
        response=r.ProjectSettings),
    _Op("patch", "/api/projects/{project_id}",
        "Set the project's own metric retention (owner; null: the server's setting)", "token",
        body=ProjectPatchBody, response=r.ProjectSettings),
    _Op("get", _MEMBERS, "The project's members and roles (viewer+)", "token",
        response=r.MemberList),
    _Op("post", _MEMBERS, "Add a user to the project (admin+; owner to add an owner)", "token",
        body=InviteBody, success=201, conflict="the user is a member already",
        response=r.MemberInvited),
    _Op("patch", _MEMBERS + "/{user_id}", "Change a member's role (admin+; owner for owners)",
        "token", body=RoleBody, conflict="the project would have no owner", response=r.Member),
    _Op("delete", _MEMBERS + "/{user_id}", "Remove a member (admin+; anyone may leave)", "token",
        success=204, conflict="the project would have no owner"),
    _Op("get", "/api/projects/{project_id}/audit", "Credential and membership changes (owner)",
        "token", query=AuditParams, response=r.AuditLog),
    _Op("post", "/api/tokens", "Create a personal token (secret shown once)", "token",
        body=TokenBody, success=201, response=r.TokenCreated,
        beyond_schema=("ttl: from 5 minutes to 366 days", _NOT_PERSONAL)),
    _Op("get", "/api/tokens", "Your tokens, without secrets", "token", response=r.TokenList,
        beyond_schema=(_NOT_PERSONAL,)),
    _Op("delete", "/api/tokens/{token_id}", "Revoke one of your tokens, at once", "token",
        success=204, beyond_schema=(_NOT_PERSONAL,)),
    _Op("post", "/api/keys", "Create an API key (admin+; secret shown once)", "bearer",
        body=KeyBody, success=201, response=r.KeyCreated),
    _Op("get", "/api/keys", "The project's API keys: prefix, last use, status (admin+)",
        "bearer", response=r.KeyList),
    _Op("post", "/api/keys/{key_id}/rotate", "Replace a key; the old one works for `grace`",
        "bearer", body=RotateBody, success=201, response=r.KeyCreated,
        beyond_schema=("grace: at most 7 days",)),
    _Op("delete", "/api/keys/{key_id}", "Revoke an API key, at once (admin+)", "bearer",
        success=204),
)
if not any(op.path == "/api/keys" for op in openapi.EXTRA_OPERATIONS):
    openapi.EXTRA_OPERATIONS.extend(OPERATIONS)
