"""Projects, users, memberships with roles, API keys, tokens, the principal a request acts as,
and the audit trail of credential and membership changes.

Secrets (API keys, bearer tokens) are random, high-entropy strings shown once; stores keep
only their SHA-256 digest, which is enough for a 256-bit secret (no salt or slow hash needed),
plus a short prefix so that a listing can say which key is which.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Mapping
from datetime import datetime

import attrs

from opspilot.domain.errors import Forbidden, ValidationError

API_KEY_PREFIX = "opk_"
TOKEN_PREFIX = "opt_"
SHOWN_PREFIX_CHARS = 12  # "opk_" and 8 random characters: enough to tell keys apart
OPERATOR_ID = "operator"  # who acts through the admin token or straight on the database


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def shown_prefix(secret: str) -> str:
    return secret[:SHOWN_PREFIX_CHARS]


class Role(enum.StrEnum):
    """A user's role in one project; each role can do what the ones below it can."""

    OWNER = "owner"  # + members of any role, the audit log
    ADMIN = "admin"  # + API keys, members below owner
    MEMBER = "member"  # + alert rules, channels, incidents
    VIEWER = "viewer"  # read metrics, logs, rules, channels, incidents

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def at_least(self, other: Role) -> bool:
        return self.rank >= other.rank


_RANKS = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}


class KeyScope(enum.StrEnum):
    INGEST = "ingest"


MAX_RETENTION_DAYS = 3650  # ten years: a bound on what one project may make the server keep


def _retention_days(field: str) -> Callable[[object, object, int | None], None]:
    def check(_: object, __: object, value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 1 <= value <= MAX_RETENTION_DAYS):
            raise ValidationError(f"metric_retention.{field}",
                                  f"whole days from 1 to {MAX_RETENTION_DAYS}, or null")
    return check


@attrs.frozen
class MetricRetention:
    """A project's own retention, in days, of its raw metric values and of the hourly
    summaries that outlive them (downsampling, ADR 0017); None: the server's setting.
    Summaries are never kept for less time than the values they summarise."""

    values_days: int | None = attrs.field(default=None, validator=_retention_days("values_days"))
    summary_days: int | None = attrs.field(default=None,
                                           validator=_retention_days("summary_days"))

    def __attrs_post_init__(self) -> None:
        if (self.values_days is not None and self.summary_days is not None
                and self.summary_days < self.values_days):
            raise ValidationError("metric_retention.summary_days",
                                  "at least values_days (summaries outlive the values)")

    @property
    def is_default(self) -> bool:
        return self.values_days is None and self.summary_days is None


@attrs.frozen
class Project:
    id: str
    name: str
    created_at: datetime
    metric_retention: MetricRetention = MetricRetention()


@attrs.frozen
class User:
    """`name` is the user's e-mail address (unique). `admin`: may create users and projects."""

    id: str
    name: str
    created_at: datetime
    admin: bool = False


@attrs.frozen
class Membership:
    user_id: str
    project_id: str
    role: Role


@attrs.frozen
class ApiKey:
    """Writes into one project. A rotated key keeps working until `expires_at` (its grace)."""

    id: str
    project_id: str
    key_hash: str
    created_at: datetime
    revoked: bool = False
    name: str = "default"
    scope: KeyScope = KeyScope.INGEST
    prefix: str = ""
    expires_at: datetime | None = None
    last_used_at: datetime | None = None

    def usable_at(self, now: datetime) -> bool:
        return not self.revoked and (self.expires_at is None or now < self.expires_at)


@attrs.frozen
class Token:
    """A user's personal bearer token; `expires_at` None only for tokens made before expiry
    existed (new ones always expire)."""

    id: str
    user_id: str
    token_hash: str
    created_at: datetime
    revoked: bool = False
    name: str = "default"
    prefix: str = ""
    expires_at: datetime | None = None

    def usable_at(self, now: datetime) -> bool:
        return not self.revoked and (self.expires_at is None or now < self.expires_at)


@attrs.frozen
class AuditEvent:
    """Who changed which credential or membership, and when. `project_id` None: a change
    outside any project (a user, a personal token)."""

    id: str
    at: datetime
    actor: str
    action: str  # e.g. "key.rotate", "member.role"
    project_id: str | None
    target: str
    details: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class Principal:
    """Who asks: a user (bearer token) with a role in each of their projects. The operator
    (admin token, or the CLI on the database) may act on every project as an owner."""

    user_id: str
    roles: Mapping[str, Role] = attrs.field(factory=dict)
    admin: bool = False
    token_id: str | None = None

    @property
    def project_ids(self) -> frozenset[str]:
        return frozenset(self.roles)

    @property
    def is_operator(self) -> bool:
        return self.user_id == OPERATOR_ID

    def role_in(self, project_id: str) -> Role | None:
        return Role.OWNER if self.is_operator else self.roles.get(project_id)

    def require(self, project_id: str, needed: Role = Role.VIEWER) -> Role:
        role = self.role_in(project_id)
        if role is None:
            raise Forbidden(
                "not a member of this project", {"field": "X-Project-ID", "project_id": project_id}
            )
        if not role.at_least(needed):
            raise Forbidden(
                f"this needs the {needed} role or higher; yours is {role}",
                {"field": "X-Project-ID", "project_id": project_id, "role": role.value,
                 "required_role": needed.value},
            )
        return role

    def require_admin(self) -> None:
        if not self.admin:
            raise Forbidden("only administrators may do this", {"field": "Authorization"})


OPERATOR = Principal(OPERATOR_ID, admin=True)


@attrs.frozen
class IngestIdentity:
    """What an API key grants: writing into exactly one project."""

    project_id: str
    key_id: str
