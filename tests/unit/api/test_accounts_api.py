"""Accounts through the API: the admin surface, every role against every endpoint, members,
personal tokens, API keys (rotation grace, revocation), the audit log, the principal cache."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import attrs

from opspilot.adapters.clock_and_ids import FixedClock
from opspilot.container import Container
from opspilot.domain.tenancy import MetricRetention, Role, digest
from opspilot.entrypoints.api.app import create_app
from opspilot.entrypoints.assembly import api_services
from tests.unit.conftest import ADMIN_HEADERS, Tenant, drain

ROLES = [Role.VIEWER, Role.MEMBER, Role.ADMIN, Role.OWNER]
WINDOW = "start_time=2024-03-01T11:00:00Z"
RULE = {"name": "slow", "metric_name": "latency", "threshold": 100}


@attrs.frozen
class Person:
    user_id: str
    token: str
    project_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "X-Project-ID": self.project_id}


async def _person(api: Any, owner: Tenant, email: str, role: Role) -> Person:
    """A new user invited into the owner's project with `role` (owners invite owners)."""
    response = await api.post(f"/api/projects/{owner.project_id}/members",
                              json={"email": email, "role": role.value},
                              headers=owner.query_headers)
    assert response.status == 201, await response.text()
    doc = await response.json()
    return Person(doc["user_id"], doc["token"], owner.project_id)


# -- the admin surface -----------------------------------------------------------------------


async def test_admin_surface_is_absent_without_an_admin_token(
    aiohttp_client: Any, container: Container
) -> None:
    api = await aiohttp_client(create_app(attrs.evolve(api_services(container), admin_token=None)))
    response = await api.post("/api/admin/projects", json={"name": "x"}, headers=ADMIN_HEADERS)
    assert response.status == 404


async def test_admin_surface_needs_its_token_and_json(api: Any, tenant: Tenant) -> None:
    no_token = await api.post("/api/admin/projects", json={"name": "x"})
    assert no_token.status == 401
    wrong = await api.post("/api/admin/projects", json={"name": "x"},
                           headers={"Authorization": "Bearer " + "x" * 33})
    assert wrong.status == 401
    user_token = await api.post("/api/admin/projects", json={"name": "x"},
                                headers={"Authorization": f"Bearer {tenant.token}"})
    assert user_token.status == 401
    plain = await api.post("/api/admin/projects", data='{"name": "x"}',
                           headers={**ADMIN_HEADERS, "Content-Type": "text/plain"})
    assert plain.status == 415
    assert (await plain.json())["error"]["details"]["field"] == "Content-Type"


async def test_the_admin_surface_is_rate_limited_per_address(
    aiohttp_client: Any, container: Container
) -> None:
    svc = api_services(container)
    api = await aiohttp_client(create_app(attrs.evolve(
        svc, rate_limits=attrs.evolve(svc.rate_limits, enabled=True))))
    statuses = []
    for _ in range(25):
        response = await api.post("/api/admin/projects", json={"name": "x"},
                                  headers={"Authorization": "Bearer " + "y" * 33})
        statuses.append(response.status)
    assert statuses[:20] == [401] * 20
    assert set(statuses[20:]) == {429}


async def test_a_name_conflict_is_told_to_administrators_only(api: Any, tenant: Tenant) -> None:
    taken = await api.post("/api/admin/projects", json={"name": "alpha"}, headers=ADMIN_HEADERS)
    assert taken.status == 409
    # A user who is not an administrator learns nothing about which names exist.
    response = await api.post("/api/projects", json={"name": "alpha"},
                              headers={"Authorization": f"Bearer {tenant.token}"})
    assert response.status == 403
    fresh = await api.post("/api/projects", json={"name": "never-used"},
                           headers={"Authorization": f"Bearer {tenant.token}"})
    assert fresh.status == 403


async def test_an_admin_user_creates_projects_they_own(api: Any) -> None:
    made = await api.post("/api/admin/users", json={"email": "Root@Example.com", "admin": True},
                          headers=ADMIN_HEADERS)
    assert made.status == 201
    user = await made.json()
    assert user["email"] == "root@example.com"
    again = await api.post("/api/admin/users", json={"email": "root@example.com"},
                           headers=ADMIN_HEADERS)
    assert again.status == 409
    root = {"Authorization": f"Bearer {user['token']}"}
    created = await api.post("/api/projects", json={"name": "rooted"}, headers=root)
    assert created.status == 201
    project = await created.json()
    assert project["token"] is None and project["owner_id"] == user["id"]
    # Their cached principal was dropped: the new project is readable at once.
    members = await api.get(f"/api/projects/{project['project_id']}/members", headers=root)
    assert [m["role"] for m in (await members.json())["members"]] == ["owner"]


# -- the role matrix ----------------------------------------------------------------------------


# (method, path template[?query], body, the least role allowed). Ids that do not exist are
# fine: a role allowed gets past the check (to 404/400), one below it gets 403 before any
# lookup.
ENDPOINTS: list[tuple[str, str, Any, Role]] = [
    ("GET", f"/api/metrics/query?metric_name=latency&{WINDOW}", None, Role.VIEWER),
    ("POST", "/api/metrics/query-multiple", {"metrics": [{"name": "latency"}],
                                             "start_time": "2024-03-01T11:00:00Z",
                                             "end_time": "2024-03-01T12:00:00Z"}, Role.VIEWER),
    ("GET", "/api/metrics/names", None, Role.VIEWER),
    ("GET", "/api/metrics/services", None, Role.VIEWER),
    ("GET", "/api/metrics/tags?metric_name=latency", None, Role.VIEWER),
    ("GET", f"/api/metrics/histogram?metric_name=latency&{WINDOW}", None, Role.VIEWER),
    ("GET", "/api/metrics/anomalies?metric_name=latency", None, Role.VIEWER),
    ("GET", f"/api/logs/query?{WINDOW}", None, Role.VIEWER),
    ("GET", f"/api/logs/volume?{WINDOW}", None, Role.VIEWER),
    ("GET", f"/api/logs/error-spikes?{WINDOW}", None, Role.VIEWER),
    ("GET", f"/api/logs/patterns?{WINDOW}", None, Role.VIEWER),
    ("GET", "/api/logs/{log_id}/context", None, Role.VIEWER),
    ("GET", "/api/v1/query?query=up", None, Role.VIEWER),
    ("GET", "/api/v1/labels", None, Role.VIEWER),
    ("GET", "/api/rules", None, Role.VIEWER),
    ("GET", "/api/rules/{rule_id}", None, Role.VIEWER),
    ("GET", "/api/channels", None, Role.VIEWER),
    ("GET", "/api/channels/{channel_id}", None, Role.VIEWER),
    ("GET", "/api/incidents", None, Role.VIEWER),
    ("GET", "/api/incidents/{incident_id}", None, Role.VIEWER),
    ("GET", "/api/projects/{project_id}/members", None, Role.VIEWER),
    ("POST", "/api/rules", RULE, Role.MEMBER),
    ("PUT", "/api/rules/{rule_id}", RULE, Role.MEMBER),
    ("PATCH", "/api/rules/{rule_id}", {"threshold": 5}, Role.MEMBER),
    ("DELETE", "/api/rules/{rule_id}", None, Role.MEMBER),
    ("POST", "/api/rules/{rule_id}/enable", None, Role.MEMBER),
    ("POST", "/api/rules/{rule_id}/disable", None, Role.MEMBER),
    ("POST", "/api/channels", {"name": "mail", "type": "email", "target": "a@b.c"}, Role.MEMBER),
    ("DELETE", "/api/channels/{channel_id}", None, Role.MEMBER),
    ("POST", "/api/channels/{channel_id}/test", None, Role.MEMBER),
    ("POST", "/api/incidents/{incident_id}/acknowledge", None, Role.MEMBER),
    ("POST", "/api/incidents/{incident_id}/resolve", None, Role.MEMBER),
    ("GET", "/api/keys", None, Role.ADMIN),
    ("POST", "/api/keys", {"name": "extra"}, Role.ADMIN),
    ("POST", "/api/keys/{key_id}/rotate", {"grace": "0"}, Role.ADMIN),
    ("DELETE", "/api/keys/{key_id}", None, Role.ADMIN),
    ("POST", "/api/projects/{project_id}/members", {"email": "new@x.io", "role": "viewer"},
     Role.ADMIN),
    ("PATCH", "/api/projects/{project_id}/members/{user_id}", {"role": "viewer"}, Role.ADMIN),
    ("DELETE", "/api/projects/{project_id}/members/{user_id}", None, Role.ADMIN),
    ("GET", "/api/projects/{project_id}/audit", None, Role.OWNER),
    ("GET", "/api/projects/{project_id}", None, Role.VIEWER),
    ("PATCH", "/api/projects/{project_id}", {"metric_retention": {"values_days": 30}},
     Role.OWNER),
]
# Bearer operations outside any project: personal tokens, who-am-I, and project creation
# (administrators only, tested apart).
NOT_PROJECT_SCOPED = {("GET", "/api/me"), ("POST", "/api/projects"), ("GET", "/api/tokens"),
                      ("POST", "/api/tokens"), ("DELETE", "/api/tokens/{token_id}")}


def test_the_matrix_covers_every_documented_bearer_operation() -> None:
    from opspilot.entrypoints.api.openapi import build_document

    documented = {(method.upper(), path)
                  for path, operations in build_document()["paths"].items()
                  for method, operation in operations.items()
                  if operation.get("security") == [{"bearer": []}]}
    covered = {(method, template.split("?")[0]) for method, template, _, _ in ENDPOINTS}
    assert documented - NOT_PROJECT_SCOPED == covered - {
        ("GET", "/api/v1/query"), ("GET", "/api/v1/labels")}  # documented in their own spec


async def test_every_role_against_every_endpoint(
    api: Any, tenant: Tenant, other_tenant: Tenant, container: Container
) -> None:
    people = {role: await _person(api, tenant, f"{role}@x.io", role) for role in ROLES}
    target = await _person(api, tenant, "target@x.io", Role.VIEWER)
    outsider = Person("", other_tenant.token, tenant.project_id)
    ids = {"project_id": tenant.project_id, "user_id": target.user_id, "rule_id": "none",
           "channel_id": "none", "incident_id": "none", "log_id": "none",
           "key_id": (await container.tenancy().list_api_keys(tenant.project_id))[0].id}
    refused, allowed = [], []
    for method, template, body, least in ENDPOINTS:
        path = template.format(**ids)
        for role, person in [*people.items(), (None, outsider)]:
            response = await api.request(method, path, json=body, headers=person.headers)
            ok = role is not None and role.at_least(least)
            (allowed if ok else refused).append((method, path, role, response.status))
            if ok:
                assert response.status not in (401, 403), (method, path, role,
                                                            await response.text())
            else:
                assert response.status == 403, (method, path, role, await response.text())
    assert len(refused) == sum(1 + least.rank for *_, least in ENDPOINTS)
    assert len(allowed) == sum(4 - least.rank for *_, least in ENDPOINTS)


async def test_a_viewer_reads_but_cannot_write(api: Any, tenant: Tenant, container: Container) -> None:
    viewer = await _person(api, tenant, "v@x.io", Role.VIEWER)
    point = {"name": "latency", "value": 1.0, "timestamp": "2024-03-01T11:30:00Z"}
    await api.post("/api/ingest/metrics", json={"metrics": [point]}, headers=tenant.ingest_headers)
    await drain(container)
    url = f"/api/metrics/query?metric_name=latency&{WINDOW}&time_bucket=1h"
    assert len((await (await api.get(url, headers=viewer.headers)).json())["points"]) == 1
    refused = await api.post("/api/rules", json=RULE, headers=viewer.headers)
    body = await refused.json()
    assert refused.status == 403 and body["error"]["details"]["required_role"] == "member"


# -- members -----------------------------------------------------------------------------------


async def test_role_changes_apply_at_once(api: Any, tenant: Tenant) -> None:
    person = await _person(api, tenant, "m@x.io", Role.MEMBER)
    assert (await api.get("/api/rules", headers=person.headers)).status == 200  # cached now
    members = f"/api/projects/{tenant.project_id}/members/{person.user_id}"
    assert (await api.post("/api/rules", json=RULE, headers=person.headers)).status == 201
    demoted = await api.patch(members, json={"role": "viewer"}, headers=tenant.query_headers)
    assert demoted.status == 200 and (await demoted.json())["role"] == "viewer"
    assert (await api.post("/api/rules", json=RULE, headers=person.headers)).status == 403
    assert (await api.delete(members, headers=tenant.query_headers)).status == 204
    assert (await api.get("/api/rules", headers=person.headers)).status == 403


async def test_admins_cannot_touch_owners_and_a_project_keeps_one(
    api: Any, tenant: Tenant, container: Container
) -> None:
    admin = await _person(api, tenant, "a@x.io", Role.ADMIN)
    members = f"/api/projects/{tenant.project_id}/members"
    owner_id = next(m["user_id"] for m in (await (await api.get(
        members, headers=tenant.query_headers)).json())["members"] if m["role"] == "owner")
    promote = await api.post(members, json={"email": "o2@x.io", "role": "owner"},
                             headers=admin.headers)
    assert promote.status == 403
    demote_owner = await api.patch(f"{members}/{owner_id}", json={"role": "viewer"},
                                   headers=admin.headers)
    assert demote_owner.status == 403
    last = await api.patch(f"{members}/{owner_id}", json={"role": "admin"},
                           headers=tenant.query_headers)
    assert last.status == 409
    leave = await api.delete(f"{members}/{owner_id}", headers=tenant.query_headers)
    assert leave.status == 409
    twice = await api.post(members, json={"email": "a@x.io", "role": "viewer"},
                           headers=tenant.query_headers)
    assert twice.status == 409
    # anyone may leave
    assert (await api.delete(f"{members}/{admin.user_id}", headers=admin.headers)).status == 204


# -- personal tokens ------------------------------------------------------------------------------


async def test_tokens_expire_list_without_secrets_and_revoke(
    api: Any, tenant: Tenant, clock: FixedClock
) -> None:
    user = {"Authorization": f"Bearer {tenant.token}"}
    made = await api.post("/api/tokens", json={"name": "ci", "ttl": "1h"}, headers=user)
    assert made.status == 201
    token = await made.json()
    assert token["token"].startswith(token["prefix"]) and token["status"] == "active"
    listed = await (await api.get("/api/tokens", headers=user)).json()
    assert {t["name"] for t in listed["tokens"]} == {"owner of alpha", "ci"}
    assert all("token" not in t for t in listed["tokens"])
    mine = {"Authorization": f"Bearer {token['token']}", "X-Project-ID": tenant.project_id}
    assert (await api.get("/api/rules", headers=mine)).status == 200
    clock.advance(timedelta(hours=1))
    assert (await api.get("/api/rules", headers=mine)).status == 401  # expired, though cached
    statuses = {t["name"]: t["status"] for t in
                (await (await api.get("/api/tokens", headers=user)).json())["tokens"]}
    assert statuses["ci"] == "expired"
    bad_ttl = await api.post("/api/tokens", json={"name": "x", "ttl": "1s"}, headers=user)
    assert bad_ttl.status == 400 and (await bad_ttl.json())["error"]["details"]["field"] == "ttl"


async def test_a_token_is_revoked_at_once_and_only_by_its_user(
    api: Any, tenant: Tenant, other_tenant: Tenant
) -> None:
    user = {"Authorization": f"Bearer {tenant.token}"}
    token = await (await api.post("/api/tokens", json={"name": "ci"}, headers=user)).json()
    mine = {"Authorization": f"Bearer {token['token']}", "X-Project-ID": tenant.project_id}
    assert (await api.get("/api/rules", headers=mine)).status == 200
    theirs = {"Authorization": f"Bearer {other_tenant.token}"}
    assert (await api.delete(f"/api/tokens/{token['id']}", headers=theirs)).status == 404
    assert (await api.delete(f"/api/tokens/{token['id']}", headers=user)).status == 204
    assert (await api.get("/api/rules", headers=mine)).status == 401


# -- API keys ------------------------------------------------------------------------------------


async def _ingest(api: Any, key: str) -> int:
    point = {"name": "x", "value": 1.0, "timestamp": "2024-03-01T11:30:00Z"}
    response = await api.post("/api/ingest/metrics", json={"metrics": [point]},
                              headers={"X-API-Key": key})
    return int(response.status)


async def test_keys_rotate_with_a_grace_and_revoke_at_once(
    api: Any, tenant: Tenant, clock: FixedClock
) -> None:
    q = tenant.query_headers
    assert await _ingest(api, tenant.api_key) == 202
    keys = (await (await api.get("/api/keys", headers=q)).json())["keys"]
    assert len(keys) == 1 and tenant.api_key.startswith(keys[0]["prefix"])
    assert keys[0]["last_used_at"] is not None and "api_key" not in keys[0]
    rotated = await api.post(f"/api/keys/{keys[0]['id']}/rotate", json={"grace": "2h"}, headers=q)
    assert rotated.status == 201
    new = await rotated.json()
    assert new["name"] == keys[0]["name"] and new["status"] == "active"
    assert await _ingest(api, new["api_key"]) == 202
    assert await _ingest(api, tenant.api_key) == 202  # within the grace
    listed = {k["id"]: k for k in (await (await api.get("/api/keys", headers=q)).json())["keys"]}
    assert listed[keys[0]["id"]]["status"] == "grace"
    clock.advance(timedelta(hours=2))
    assert await _ingest(api, tenant.api_key) == 401  # the grace is over
    assert await _ingest(api, new["api_key"]) == 202
    assert (await api.delete(f"/api/keys/{new['id']}", headers=q)).status == 204
    assert await _ingest(api, new["api_key"]) == 401
    assert (await api.delete(f"/api/keys/{new['id']}", headers=q)).status == 404
    too_long = await api.post(f"/api/keys/{new['id']}/rotate", json={"grace": "8d"}, headers=q)
    assert too_long.status in (400, 404)


async def test_a_key_of_another_project_is_not_found(
    api: Any, tenant: Tenant, other_tenant: Tenant, container: Container
) -> None:
    theirs = (await container.tenancy().list_api_keys(other_tenant.project_id))[0]
    response = await api.delete(f"/api/keys/{theirs.id}", headers=tenant.query_headers)
    assert response.status == 404
    assert await _ingest(api, other_tenant.api_key) == 202


# -- audit ---------------------------------------------------------------------------------------


async def test_owners_read_who_changed_what(api: Any, tenant: Tenant) -> None:
    q = tenant.query_headers
    person = await _person(api, tenant, "audited@x.io", Role.ADMIN)
    await api.post("/api/keys", json={"name": "by-admin"}, headers=person.headers)
    log = await api.get(f"/api/projects/{tenant.project_id}/audit", headers=q)
    events = (await log.json())["events"]
    actions = [e["action"] for e in events]
    assert actions[:2] == ["key.create", "member.add"]
    assert events[0]["actor"] == person.user_id and events[0]["details"]["name"] == "by-admin"
    assert "project.create" in actions
    denied = await api.get(f"/api/projects/{tenant.project_id}/audit", headers=person.headers)
    assert denied.status == 403


# -- the principal cache is not an authority ------------------------------------------------------


async def test_a_forged_cache_entry_is_refused(
    api: Any, tenant: Tenant, other_tenant: Tenant, container: Container
) -> None:
    forged_secret = "opt_" + "f" * 43
    entry = (b"0" * 64 + b'.{"u":"x","t":"t","a":true,"r":{"%s":"owner"},"x":9e12}'
             % tenant.project_id.encode())
    await container.cache().set(f"principal:{digest(forged_secret)}", entry, 30)
    headers = {"Authorization": f"Bearer {forged_secret}", "X-Project-ID": tenant.project_id}
    assert (await api.get(f"/api/logs/query?{WINDOW}", headers=headers)).status == 401
    # a genuine entry moved under another token's key does not verify either
    other = {"Authorization": f"Bearer {other_tenant.token}", "X-Project-ID": tenant.project_id}
    assert (await api.get("/api/rules", headers=tenant.query_headers)).status == 200
    genuine = await container.cache().get(f"principal:{digest(tenant.token)}")
    assert genuine is not None
    await container.cache().set(f"principal:{digest(other_tenant.token)}", genuine, 30)
    assert (await api.get("/api/rules", headers=other)).status == 403


async def test_the_admin_token_acts_as_the_operator_on_every_project(
    api: Any, tenant: Tenant
) -> None:
    headers = {**ADMIN_HEADERS, "X-Project-ID": tenant.project_id}
    assert (await api.get("/api/keys", headers=headers)).status == 200


# -- project settings: the project's own metric retention ---------------------------------------


async def test_an_owner_sets_the_projects_metric_retention(
    api: Any, tenant: Tenant, other_tenant: Tenant, container: Container
) -> None:
    path = f"/api/projects/{tenant.project_id}"
    shown = await (await api.get(path, headers=tenant.query_headers)).json()
    assert shown["metric_retention"] == {"values_days": None, "summary_days": None}

    body = {"metric_retention": {"values_days": 15, "summary_days": 730}}
    changed = await api.patch(path, json=body, headers=tenant.query_headers)
    assert changed.status == 200, await changed.text()
    assert (await changed.json())["metric_retention"] == body["metric_retention"]
    shown = await (await api.get(path, headers=tenant.query_headers)).json()
    assert shown["metric_retention"] == body["metric_retention"]
    assert await container.tenancy().metric_retentions() == {
        tenant.project_id: MetricRetention(15, 730)}
    events = await (await api.get(path + "/audit", headers=tenant.query_headers)).json()
    assert events["events"][0]["action"] == "project.retention"
    assert events["events"][0]["details"]["values_days"] == "15"

    # another project's owner can neither read nor change it
    for method in ("GET", "PATCH"):
        crossing = await api.request(method, path, json=body, headers=other_tenant.query_headers)
        assert crossing.status == 403, method
    assert (await container.tenancy().get_project(other_tenant.project_id)
            ).metric_retention == MetricRetention()

    back = await api.patch(path, json={"metric_retention": {}}, headers=tenant.query_headers)
    assert (await back.json())["metric_retention"] == {"values_days": None, "summary_days": None}
    assert await container.tenancy().metric_retentions() == {}


async def test_a_bad_retention_is_refused_naming_the_field(api: Any, tenant: Tenant) -> None:
    path = f"/api/projects/{tenant.project_id}"
    cases = [
        ({"metric_retention": {"values_days": 0}}, "values_days"),
        ({"metric_retention": {"values_days": 3651}}, "values_days"),
        ({"metric_retention": {"values_days": "15"}}, "values_days"),
        ({"metric_retention": {"values_days": True}}, "values_days"),
        ({"metric_retention": {"summary_days": 1.5}}, "summary_days"),
        ({"metric_retention": {"values_days": 30, "summary_days": 10}}, "summary_days"),
        ({"metric_retention": {"raw_days": 3}}, "raw_days"),
        ({"retention": {}}, "retention"),
    ]
    for body, field in cases:
        response = await api.patch(path, json=body, headers=tenant.query_headers)
        assert response.status == 400, (body, response.status, await response.text())
        error = (await response.json())["error"]
        assert field in str(error["details"]) or field in error["message"], (body, error)
    shown = await (await api.get(path, headers=tenant.query_headers)).json()
    assert shown["metric_retention"] == {"values_days": None, "summary_days": None}
