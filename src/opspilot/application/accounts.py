"""Users, projects, memberships, personal tokens and API keys, managed without SQL.

Every method takes the principal acting (a user, or OPERATOR for the admin token and the CLI
on the database), checks what its role allows, makes the change, records it in the audit
log and, when a user's access shrinks, drops their cached principals at once. Secrets are
returned once, in the result of the call that made them; stores keep their hashes.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

import attrs

from opspilot.application.auth import Authenticator
from opspilot.domain.errors import Conflict, Forbidden, NotFound, ValidationError
from opspilot.domain.ports import Clock, IdGenerator, TenancyStore
from opspilot.domain.tenancy import (
    API_KEY_PREFIX,
    OPERATOR,
    TOKEN_PREFIX,
    ApiKey,
    AuditEvent,
    KeyScope,
    Membership,
    MetricRetention,
    Principal,
    Project,
    Role,
    Token,
    User,
    digest,
    shown_prefix,
)

DEFAULT_TOKEN_TTL = timedelta(days=90)
MAX_TOKEN_TTL = timedelta(days=366)
MIN_TOKEN_TTL = timedelta(minutes=5)
DEFAULT_ROTATION_GRACE = timedelta(hours=24)
MAX_ROTATION_GRACE = timedelta(days=7)


@attrs.frozen
class Credentials:
    """A new project: its first API key, and a token of its first owner (None when the
    owner is the user who asked, who has a token already)."""

    project_id: str
    project_name: str
    api_key: str
    token: str | None
    user_id: str


@attrs.frozen
class NewToken:
    token: Token
    secret: str


@attrs.frozen
class NewKey:
    key: ApiKey
    secret: str


@attrs.frozen
class NewMember:
    membership: Membership
    user: User
    token: NewToken | None  # a first token when the invitation created the user


def _new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def _email(text: str) -> str:
    email = text.strip().lower()
    local, at, domain = email.partition("@")
    if not (at and local and domain and 3 <= len(email) <= 254) or any(c.isspace() for c in email):
        raise ValidationError("email", "an e-mail address such as ann@example.com")
    return email


class Accounts:
    def __init__(
        self, tenancy: TenancyStore, auth: Authenticator, clock: Clock, ids: IdGenerator
    ) -> None:
        self._tenancy = tenancy
        self._auth = auth
        self._clock = clock
        self._ids = ids

    # -- users and projects ----------------------------------------------------------------

    async def create_user(
        self, email: str, admin: bool = False, actor: Principal = OPERATOR
    ) -> tuple[User, NewToken]:
        actor.require_admin()
        user = User(self._ids.new_id(), _email(email), self._clock.now(), admin)
        await self._tenancy.add_user(user)
        await self._audit(actor, "user.create", None, user.id, email=user.name,
                          admin=str(admin).lower())
        return user, await self._issue_token(user.id, "first token", DEFAULT_TOKEN_TTL, actor)

    async def create_project(
        self, name: str, owner_email: str | None = None, actor: Principal = OPERATOR
    ) -> Credentials:
        """Administrators only, so that a 409 tells nobody else which names exist."""
        actor.require_admin()
        name = name.strip()
        if not 1 <= len(name) <= 100:
            raise ValidationError("name", "1-100 characters")
        project = Project(self._ids.new_id(), name, self._clock.now())
        await self._tenancy.add_project(project)
        await self._audit(actor, "project.create", project.id, project.id, name=name)
        owner, token = await self._first_owner(project, owner_email, actor)
        await self._tenancy.add_membership(owner.id, project.id, Role.OWNER)
        await self._audit(actor, "member.add", project.id, owner.id, role=Role.OWNER.value)
        key = await self._issue_key(project.id, "default", KeyScope.INGEST, actor)
        return Credentials(project.id, name, key.secret, token, owner.id)

    async def _first_owner(
        self, project: Project, owner_email: str | None, actor: Principal
    ) -> tuple[User, str | None]:
        if owner_email is None and not actor.is_operator:
            user = await self._tenancy.get_user(actor.user_id)
            if user is None:
                raise NotFound("the acting user no longer exists", {"field": "Authorization"})
            await self._auth.forget_user(user.id)  # their cached roles lack the new project
            return user, None
        email = _email(owner_email) if owner_email else f"owner@{project.name}"
        user = await self._tenancy.find_user(email)
        if user is None:
            user = User(self._ids.new_id(), email, self._clock.now())
            await self._tenancy.add_user(user)
            await self._audit(actor, "user.create", None, user.id, email=email, admin="false")
        else:
            await self._auth.forget_user(user.id)
        made = await self._issue_token(user.id, f"owner of {project.name}", DEFAULT_TOKEN_TTL,
                                       actor)
        return user, made.secret

    async def project(self, actor: Principal, project_id: str) -> Project:
        """The project and its settings (viewer+)."""
        actor.require(project_id, Role.VIEWER)
        project = await self._tenancy.get_project(project_id)
        if project is None:
            raise NotFound("no such project", {"field": "project_id"})
        return project

    async def set_metric_retention(
        self, actor: Principal, project_id: str, retention: MetricRetention
    ) -> Project:
        """Owners only: a shorter retention deletes data at the next retention run, for good."""
        actor.require(project_id, Role.OWNER)
        before = await self.project(actor, project_id)
        if not await self._tenancy.set_metric_retention(project_id, retention):
            raise NotFound("no such project", {"field": "project_id"})
        await self._audit(actor, "project.retention", project_id, project_id,
                          values_days=_days(retention.values_days),
                          summary_days=_days(retention.summary_days),
                          previous=f"{_days(before.metric_retention.values_days)}/"
                                   f"{_days(before.metric_retention.summary_days)}")
        return attrs.evolve(before, metric_retention=retention)

    # -- members ---------------------------------------------------------------------------

    async def members(self, actor: Principal, project_id: str) -> list[tuple[Membership, User]]:
        actor.require(project_id, Role.VIEWER)
        found = []
        for membership in await self._tenancy.members(project_id):
            user = await self._tenancy.get_user(membership.user_id)
            if user is not None:
                found.append((membership, user))
        return found

    async def invite(
        self, actor: Principal, project_id: str, email: str, role: Role
    ) -> NewMember:
        """Adds a user (created when new, with a first token returned once) to the project."""
        self._may_grant(actor, project_id, role)
        email = _email(email)
        user = await self._tenancy.find_user(email)
        token = None
        if user is None:
            user = User(self._ids.new_id(), email, self._clock.now())
            await self._tenancy.add_user(user)
            await self._audit(actor, "user.create", None, user.id, email=email, admin="false")
            token = await self._issue_token(user.id, "first token", DEFAULT_TOKEN_TTL, actor)
        elif (await self._tenancy.roles_of(user.id)).get(project_id) is not None:
            raise Conflict("this user is a member already; change their role instead",
                           {"field": "email"})
        await self._tenancy.add_membership(user.id, project_id, role)
        await self._auth.forget_user(user.id)
        await self._audit(actor, "member.add", project_id, user.id, role=role.value)
        return NewMember(Membership(user.id, project_id, role), user, token)

    async def change_role(
        self, actor: Principal, project_id: str, user_id: str, role: Role
    ) -> Membership:
        self._may_grant(actor, project_id, role)
        current = await self._membership(actor, project_id, user_id)
        self._may_grant(actor, project_id, current.role)  # an admin cannot demote an owner
        if current.role is Role.OWNER and role is not Role.OWNER:
            await self._keep_an_owner(project_id)
        await self._tenancy.add_membership(user_id, project_id, role)
        await self._auth.forget_user(user_id)
        await self._audit(actor, "member.role", project_id, user_id, role=role.value,
                          previous=current.role.value)
        return Membership(user_id, project_id, role)

    async def remove_member(self, actor: Principal, project_id: str, user_id: str) -> None:
        if actor.user_id != user_id:  # leaving a project needs no role beyond membership
            actor.require(project_id, Role.ADMIN)
        current = await self._membership(actor, project_id, user_id)
        if actor.user_id != user_id:
            self._may_grant(actor, project_id, current.role)
        if current.role is Role.OWNER:
            await self._keep_an_owner(project_id)
        await self._tenancy.remove_membership(user_id, project_id)
        await self._auth.forget_user(user_id)
        await self._audit(actor, "member.remove", project_id, user_id, role=current.role.value)

    async def _membership(self, actor: Principal, project_id: str, user_id: str) -> Membership:
        actor.require(project_id, Role.VIEWER)
        found = next((m for m in await self._tenancy.members(project_id) if m.user_id == user_id),
                     None)
        if found is None:
            raise NotFound("no such member in this project", {"field": "user_id"})
        return found

    @staticmethod
    def _may_grant(actor: Principal, project_id: str, role: Role) -> None:
        """Admins manage members below owner; owners manage everyone."""
        needed = Role.OWNER if role is Role.OWNER else Role.ADMIN
        actor.require(project_id, needed)

    async def _keep_an_owner(self, project_id: str) -> None:
        owners = [m for m in await self._tenancy.members(project_id) if m.role is Role.OWNER]
        if len(owners) <= 1:
            raise Conflict("a project keeps at least one owner", {"field": "role"})

    # -- personal tokens -------------------------------------------------------------------

    async def create_token(
        self, actor: Principal, name: str, ttl: timedelta = DEFAULT_TOKEN_TTL,
        user_id: str | None = None,
    ) -> NewToken:
        """A token for the actor, or (operator only) for `user_id`."""
        owner = self._token_owner(actor, user_id)
        if not MIN_TOKEN_TTL <= ttl <= MAX_TOKEN_TTL:
            raise ValidationError("ttl", "between 5 minutes and 366 days")
        if await self._tenancy.get_user(owner) is None:
            raise NotFound("no such user", {"field": "user"})
        return await self._issue_token(owner, _label(name), ttl, actor)

    async def list_tokens(self, actor: Principal, user_id: str | None = None) -> list[Token]:
        return await self._tenancy.list_tokens(self._token_owner(actor, user_id))

    async def revoke_token(self, actor: Principal, token_id: str, user_id: str | None = None) -> Token:
        owner = self._token_owner(actor, user_id)
        mine = {t.id for t in await self._tenancy.list_tokens(owner)}
        if token_id not in mine:  # another user's token is as absent as a missing one
            raise NotFound("no such token", {"field": "token_id"})
        token = await self._auth.revoke(token_id)
        if token is None:
            raise NotFound("no such token", {"field": "token_id"})
        await self._audit(actor, "token.revoke", None, token_id, user=owner)
        return token

    @staticmethod
    def _token_owner(actor: Principal, user_id: str | None) -> str:
        if user_id is None or user_id == actor.user_id:
            if actor.is_operator:
                raise ValidationError("user", "name the user whose tokens these are")
            return actor.user_id
        if not actor.is_operator:
            raise Forbidden("only your own tokens", {"field": "user"})
        return user_id

    async def _issue_token(
        self, user_id: str, name: str, ttl: timedelta, actor: Principal
    ) -> NewToken:
        secret = _new_secret(TOKEN_PREFIX)
        now = self._clock.now()
        token = Token(self._ids.new_id(), user_id, digest(secret), now, name=name,
                      prefix=shown_prefix(secret), expires_at=now + ttl)
        await self._tenancy.add_token(token)
        await self._audit(actor, "token.create", None, token.id, user=user_id, name=name,
                          expires_at=token.expires_at.isoformat() if token.expires_at else "")
        return NewToken(token, secret)

    # -- API keys --------------------------------------------------------------------------

    async def create_key(
        self, actor: Principal, project_id: str, name: str, scope: KeyScope = KeyScope.INGEST
    ) -> NewKey:
        actor.require(project_id, Role.ADMIN)
        return await self._issue_key(project_id, _label(name), scope, actor)

    async def list_keys(self, actor: Principal, project_id: str) -> list[ApiKey]:
        actor.require(project_id, Role.ADMIN)
        return await self._tenancy.list_api_keys(project_id)

    async def rotate_key(
        self, actor: Principal, project_id: str, key_id: str,
        grace: timedelta = DEFAULT_ROTATION_GRACE,
    ) -> NewKey:
        """A new key with the same name and scope; the old one works until `grace` ends."""
        if not timedelta(0) <= grace <= MAX_ROTATION_GRACE:
            raise ValidationError("grace_seconds", "between 0 and 7 days")
        old = await self._live_key(actor, project_id, key_id)
        now = self._clock.now()
        ends = now + grace
        if old.expires_at is not None:
            ends = min(ends, old.expires_at)
        await self._tenancy.add_api_key(attrs.evolve(old, expires_at=ends, revoked=grace == timedelta(0)))
        made = await self._issue_key(project_id, old.name, old.scope, actor, rotated_from=old.id)
        await self._audit(actor, "key.rotate", project_id, old.id, new_key=made.key.id,
                          old_key_until=ends.isoformat())
        return made

    async def revoke_key(self, actor: Principal, project_id: str, key_id: str) -> ApiKey:
        old = await self._live_key(actor, project_id, key_id)
        revoked = attrs.evolve(old, revoked=True)
        await self._tenancy.add_api_key(revoked)
        await self._audit(actor, "key.revoke", project_id, key_id)
        return revoked

    async def _live_key(self, actor: Principal, project_id: str, key_id: str) -> ApiKey:
        actor.require(project_id, Role.ADMIN)
        keys = {k.id: k for k in await self._tenancy.list_api_keys(project_id)}
        key = keys.get(key_id)
        if key is None or not key.usable_at(self._clock.now()):
            raise NotFound("no such live key in this project", {"field": "key_id"})
        return key

    async def _issue_key(
        self, project_id: str, name: str, scope: KeyScope, actor: Principal,
        rotated_from: str | None = None,
    ) -> NewKey:
        secret = _new_secret(API_KEY_PREFIX)
        key = ApiKey(self._ids.new_id(), project_id, digest(secret), self._clock.now(),
                     name=name, scope=scope, prefix=shown_prefix(secret))
        await self._tenancy.add_api_key(key)
        details = {"name": name, "scope": scope.value}
        if rotated_from:
            details["rotated_from"] = rotated_from
        await self._audit(actor, "key.create", project_id, key.id, **details)
        return NewKey(key, secret)

    # -- audit -----------------------------------------------------------------------------

    async def audit_log(self, actor: Principal, project_id: str, limit: int = 100) -> list[AuditEvent]:
        actor.require(project_id, Role.OWNER)
        return await self._tenancy.list_audit(project_id, limit)

    async def _audit(
        self, actor: Principal, action: str, project_id: str | None, target: str, **details: str
    ) -> None:
        await self._tenancy.add_audit(AuditEvent(
            self._ids.new_id(), self._clock.now(), actor.user_id, action, project_id, target,
            details,
        ))


def _days(days: int | None) -> str:
    return "default" if days is None else str(days)


def _label(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= 100:
        raise ValidationError("name", "1-100 characters")
    return name
