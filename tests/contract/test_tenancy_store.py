"""TenancyStore contract: the in-memory reference and PostgreSQL behave alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest

from opspilot.domain.errors import Conflict
from opspilot.domain.tenancy import (
    ApiKey,
    AuditEvent,
    KeyScope,
    Membership,
    MetricRetention,
    Project,
    Role,
    Token,
    User,
    digest,
)

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


async def test_a_project_keeps_its_own_metric_retention(tenancy_store: Any) -> None:
    await tenancy_store.add_project(Project("p-1", "shop", T0))
    await tenancy_store.add_project(Project("p-2", "blog", T0))
    assert await tenancy_store.metric_retentions() == {}  # every project on the defaults

    own = MetricRetention(values_days=15, summary_days=730)
    assert await tenancy_store.set_metric_retention("p-1", own)
    assert await tenancy_store.get_project("p-1") == Project("p-1", "shop", T0, own)
    assert await tenancy_store.get_project("p-2") == Project("p-2", "blog", T0)
    assert await tenancy_store.metric_retentions() == {"p-1": own}

    assert await tenancy_store.set_metric_retention("p-1", MetricRetention(summary_days=30))
    assert await tenancy_store.metric_retentions() == {"p-1": MetricRetention(None, 30)}
    assert await tenancy_store.set_metric_retention("p-1", MetricRetention())  # back to defaults
    assert await tenancy_store.metric_retentions() == {}
    assert not await tenancy_store.set_metric_retention("nope", own)


async def test_memberships_give_each_user_their_projects(tenancy_store: Any) -> None:
    for pid, name in (("p-a", "a"), ("p-b", "b")):
        await tenancy_store.add_project(Project(pid, name, T0))
    await tenancy_store.add_user(User("u-1", "ann", T0))
    await tenancy_store.add_user(User("u-2", "bob", T0))
    await tenancy_store.add_membership("u-1", "p-a")
    await tenancy_store.add_membership("u-1", "p-b")
    await tenancy_store.add_membership("u-1", "p-b")  # twice: no error, no duplicate
    await tenancy_store.add_membership("u-2", "p-b")
    assert await tenancy_store.roles_of("u-1") == {"p-a": Role.OWNER, "p-b": Role.OWNER}
    assert await tenancy_store.roles_of("u-2") == {"p-b": Role.OWNER}
    assert await tenancy_store.roles_of("nobody") == {}


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


async def test_memberships_carry_roles_and_can_change_or_go(tenancy_store: Any) -> None:
    for pid, name in (("p-a", "a"), ("p-b", "b")):
        await tenancy_store.add_project(Project(pid, name, T0))
    await tenancy_store.add_membership("u-1", "p-a", Role.VIEWER)
    await tenancy_store.add_membership("u-2", "p-a")  # owner by default
    await tenancy_store.add_membership("u-1", "p-b", Role.ADMIN)
    assert await tenancy_store.roles_of("u-1") == {"p-a": Role.VIEWER, "p-b": Role.ADMIN}
    await tenancy_store.add_membership("u-1", "p-a", Role.MEMBER)  # a change, not a second row
    assert await tenancy_store.members("p-a") == [
        Membership("u-1", "p-a", Role.MEMBER), Membership("u-2", "p-a", Role.OWNER)]
    assert await tenancy_store.remove_membership("u-1", "p-a")
    assert not await tenancy_store.remove_membership("u-1", "p-a")
    assert await tenancy_store.roles_of("u-1") == {"p-b": Role.ADMIN}
    assert await tenancy_store.members("p-a") == [Membership("u-2", "p-a", Role.OWNER)]


async def test_users_are_found_by_email_which_is_unique(tenancy_store: Any) -> None:
    await tenancy_store.add_user(User("u-1", "ann@example.com", T0, admin=True))
    assert await tenancy_store.find_user("ann@example.com") == User(
        "u-1", "ann@example.com", T0, admin=True)
    assert await tenancy_store.get_user("u-1") == User("u-1", "ann@example.com", T0, admin=True)
    assert await tenancy_store.find_user("bob@example.com") is None
    with pytest.raises(Conflict) as raised:
        await tenancy_store.add_user(User("u-2", "ann@example.com", T0))
    assert raised.value.details["field"] == "email"
    await tenancy_store.add_user(User("u-1", "ann@example.com", T0, admin=False))  # an update
    assert (await tenancy_store.get_user("u-1")).admin is False


async def test_keys_keep_name_scope_prefix_expiry_and_last_use(tenancy_store: Any) -> None:
    later = T0 + timedelta(hours=1)
    key = ApiKey("k-1", "p-a", digest("opk_one"), T0, name="ci", scope=KeyScope.INGEST,
                 prefix="opk_one", expires_at=later)
    second = ApiKey("k-2", "p-a", digest("opk_two"), T0 + timedelta(seconds=1), name="edge")
    await tenancy_store.add_api_key(key)
    await tenancy_store.add_api_key(second)
    await tenancy_store.add_api_key(ApiKey("k-3", "p-b", digest("opk_b"), T0))
    assert await tenancy_store.find_api_key(digest("opk_one")) == key
    assert await tenancy_store.list_api_keys("p-a") == [key, second]
    await tenancy_store.touch_api_key("k-1", later)
    await tenancy_store.touch_api_key("k-1", T0)  # never backwards
    found = await tenancy_store.find_api_key(digest("opk_one"))
    assert found is not None and found.last_used_at == later
    revoked = attrs.evolve(second, revoked=True)
    await tenancy_store.add_api_key(revoked)  # revoking is saving the changed key
    assert await tenancy_store.find_api_key(digest("opk_two")) is None
    assert (await tenancy_store.list_api_keys("p-a"))[1] == revoked


async def test_tokens_keep_name_prefix_expiry_and_list_per_user(tenancy_store: Any) -> None:
    first = Token("t-1", "u-1", digest("opt_a"), T0, name="laptop", prefix="opt_a",
                  expires_at=T0 + timedelta(days=1))
    second = Token("t-2", "u-1", digest("opt_b"), T0 + timedelta(seconds=1), name="ci")
    await tenancy_store.add_token(first)
    await tenancy_store.add_token(second)
    await tenancy_store.add_token(Token("t-3", "u-2", digest("opt_c"), T0))
    assert await tenancy_store.list_tokens("u-1") == [first, second]
    assert await tenancy_store.find_token(digest("opt_a")) == first
    await tenancy_store.revoke_token("t-1")
    assert [t.revoked for t in await tenancy_store.list_tokens("u-1")] == [True, False]


async def test_the_audit_log_is_per_project_newest_first(tenancy_store: Any) -> None:
    events = [
        AuditEvent("e-1", T0, "u-1", "key.create", "p-a", "k-1", {"name": "ci"}),
        AuditEvent("e-0", T0, "u-1", "key.rotate", "p-a", "k-1"),  # same instant, written later
        AuditEvent("e-2", T0 + timedelta(seconds=1), "operator", "member.add", "p-a", "u-2",
                   {"role": "viewer"}),
        AuditEvent("e-3", T0, "u-9", "key.create", "p-b", "k-9"),
        AuditEvent("e-4", T0, "operator", "user.create", None, "u-2"),
    ]
    for event in events:
        await tenancy_store.add_audit(event)
    assert [e.id for e in await tenancy_store.list_audit("p-a")] == ["e-2", "e-0", "e-1"]
    assert await tenancy_store.list_audit("p-a", limit=1) == [events[2]]
    assert (await tenancy_store.list_audit("p-a"))[2].details == {"name": "ci"}
    assert [e.id for e in await tenancy_store.list_audit("p-b")] == ["e-3"]
