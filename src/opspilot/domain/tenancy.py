"""Projects, users, API keys and the principal a request acts as.

Secrets (API keys, bearer tokens) are random, high-entropy strings shown once; stores keep
only their SHA-256 digest, which is enough for a 256-bit secret (no salt or slow hash needed).
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import attrs

from opspilot.domain.errors import Forbidden

API_KEY_PREFIX = "opk_"
TOKEN_PREFIX = "opt_"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@attrs.frozen
class Project:
    id: str
    name: str
    created_at: datetime


@attrs.frozen
class User:
    id: str
    name: str
    created_at: datetime


@attrs.frozen
class ApiKey:
    id: str
    project_id: str
    key_hash: str
    created_at: datetime
    revoked: bool = False


@attrs.frozen
class Token:
    id: str
    user_id: str
    token_hash: str
    created_at: datetime
    revoked: bool = False


@attrs.frozen
class Principal:
    """Who asks: a user (bearer token) and the projects they belong to."""

    user_id: str
    project_ids: frozenset[str]

    def require_member(self, project_id: str) -> None:
        if project_id not in self.project_ids:
            raise Forbidden(
                "not a member of this project", {"field": "X-Project-ID", "project_id": project_id}
            )


@attrs.frozen
class IngestIdentity:
    """What an API key grants: writing into exactly one project."""

    project_id: str
    key_id: str
