"""TenancyStore contract: the in-memory reference and PostgreSQL behave alike."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from opspilot.domain.errors import Conflict
from opspilot.domain.tenancy import ApiKey, Project, Token, User, digest

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


async def test_projects_round_trip_and_names_are_unique(tenancy_store: Any) -> None:
    project = Project("p-1", "shop", T0)
    await tenancy_store.add_project(project)
    assert await tenancy_store.get_project("p-1") == project
    assert await tenancy_store.get_project("p-2") is None
    with pytest.raises(Conflict) as raised:
        await tenancy_store.add_project(Project("p-2", "shop", T0))
    assert raised.value.details["field"] == "name"
    assert await tenancy_store.get_project("p-2") is None


async def test_memberships_give_each_user_their_projects(tenancy_store: Any) -> None:
    for pid, name in (("p-a", "a"), ("p-b", "b")):
        await tenancy_store.add_project(Project(pid, name, T0))
    await tenancy_store.add_user(User("u-1", "ann", T0))
    await tenancy_store.add_user(User("u-2", "bob", T0))
    await tenancy_store.add_membership("u-1", "p-a")
    await tenancy_store.add_membership("u-1", "p-b")
    await tenancy_store.add_membership("u-1", "p-b")  # twice: no error, no duplicate
    await tenancy_store.add_membership("u-2", "p-b")
    assert await tenancy_store.projects_of("u-1") == frozenset({"p-a", "p-b"})
    assert await tenancy_store.projects_of("u-2") == frozenset({"p-b"})
    assert await tenancy_store.projects_of("nobody") == frozenset()


async def test_api_keys_are_found_by_hash_unless_revoked(tenancy_store: Any) -> None:
    key = ApiKey("k-1", "p-a", digest("opk_secret"), T0)
    await tenancy_store.add_api_key(key)
    assert await tenancy_store.find_api_key(digest("opk_secret")) == key
    assert await tenancy_store.find_api_key(digest("opk_other")) is None
    assert await tenancy_store.find_api_key("opk_secret") is None  # the secret itself is no key
    revoked = ApiKey("k-2", "p-a", digest("opk_old"), T0, revoked=True)
    await tenancy_store.add_api_key(revoked)
    assert await tenancy_store.find_api_key(digest("opk_old")) is None
    # the key names its project, and only that one
    other = ApiKey("k-3", "p-b", digest("opk_b"), T0)
    await tenancy_store.add_api_key(other)
    found = await tenancy_store.find_api_key(digest("opk_b"))
    assert found is not None and found.project_id == "p-b"


async def test_tokens_are_found_by_hash_and_revoked_by_id(tenancy_store: Any) -> None:
    token = Token("t-1", "u-1", digest("opt_secret"), T0)
    other = Token("t-2", "u-2", digest("opt_other"), T0)
    await tenancy_store.add_token(token)
    await tenancy_store.add_token(other)
    assert await tenancy_store.find_token(digest("opt_secret")) == token
    revoked = await tenancy_store.revoke_token("t-1")
    assert revoked == Token("t-1", "u-1", digest("opt_secret"), T0, revoked=True)
    assert await tenancy_store.find_token(digest("opt_secret")) is None
    assert await tenancy_store.find_token(digest("opt_other")) == other
    assert await tenancy_store.revoke_token("t-missing") is None
