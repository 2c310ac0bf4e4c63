"""Accounts on the real services, through real processes: two `opspilot api` replicas sharing
PostgreSQL and Redis, and the CLI straight on the database.

- a revoked token, a removed member and a revoked key are refused at once by the *other*
  replica (whose principal cache had them), not after the cache's 30 s;
- a rotated key keeps working on both replicas during its grace;
- a principal written into the shared Redis by hand (no server secret) is refused;
- `opspilot admin create-user`, `create-project --owner`, `keys …` and `tokens …` work on the
  database and against a server.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from cryptography.fernet import Fernet

from opspilot.domain.tenancy import digest
from tests.integration import test_pipeline_e2e as pipeline
from tests.integration.test_pipeline_e2e import Stack

# The pipeline tests' fixtures: `run` (a migrated schema, prefixes), and `deployment`, its
# `stack` (an isolated set of processes on them).
run, deployment = pipeline.run, pipeline.stack

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "e2e-admin-token-" + uuid.uuid4().hex
SECRET_KEY = Fernet.generate_key().decode()


def _configure(deployment: Stack) -> None:
    import os

    redis_url = os.environ.get("OPSPILOT_REDIS_URL")
    if not redis_url:
        pytest.fail("these tests need the shared Redis: OPSPILOT_REDIS_URL")
    deployment.urls["redis"] = redis_url
    deployment.extra_env.update(OPSPILOT_ADMIN_TOKEN=ADMIN_TOKEN, OPSPILOT_SECRET_KEY=SECRET_KEY)


async def _call(session: aiohttp.ClientSession, method: str, url: str, token: str | None = None,
                project: str | None = None, body: Any = None, api_key: str | None = None,
                ) -> tuple[int, Any]:
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if project:
        headers["X-Project-ID"] = project
    if api_key:
        headers["X-API-Key"] = api_key
    async with session.request(method, url, json=body, headers=headers) as response:
        raw = await response.read()
        return response.status, (json.loads(raw) if raw else None)


def _json_lines(output: str) -> list[Any]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


async def test_two_replicas_see_every_revocation_at_once(deployment: Stack) -> None:
    _configure(deployment)
    owner = json.loads(deployment.run("create-project", f"acc-{uuid.uuid4().hex[:8]}", "--json"))
    pid, token, key = owner["project_id"], owner["token"], owner["api_key"]
    _, a = await deployment.start_api()
    _, b = await deployment.start_api()
    point = {"metrics": [{"name": "x", "value": 1.0, "timestamp": datetime.now(UTC).isoformat()}]}
    async with aiohttp.ClientSession() as s:
        # -- a personal token, cached by both replicas, revoked through A
        status, made = await _call(s, "POST", f"{a}/api/tokens", token, body={"name": "ci"})
        assert status == 201
        for api in (a, b):
            assert (await _call(s, "GET", f"{api}/api/rules", made["token"], pid))[0] == 200
        assert (await _call(s, "DELETE", f"{a}/api/tokens/{made['id']}", token))[0] == 204
        assert (await _call(s, "GET", f"{b}/api/rules", made["token"], pid))[0] == 401
        assert (await _call(s, "GET", f"{a}/api/rules", made["token"], pid))[0] == 401

        # -- a member, cached by B with the member role, demoted then removed through A
        status, member = await _call(s, "POST", f"{a}/api/projects/{pid}/members", token,
                                     body={"email": "m@e2e.io", "role": "member"})
        assert status == 201
        rule = {"name": "r", "metric_name": "x", "threshold": 1}
        assert (await _call(s, "GET", f"{b}/api/rules", member["token"], pid))[0] == 200
        path = f"{a}/api/projects/{pid}/members/{member['user_id']}"
        assert (await _call(s, "PATCH", path, token, body={"role": "viewer"}))[0] == 200
        assert (await _call(s, "POST", f"{b}/api/rules", member["token"], pid, rule))[0] == 403
        assert (await _call(s, "DELETE", path, token))[0] == 204
        assert (await _call(s, "GET", f"{b}/api/rules", member["token"], pid))[0] == 403

        # -- an API key: rotated with a grace (both keys work on both), then revoked
        _, keys = await _call(s, "GET", f"{b}/api/keys", token, pid)
        old_id = keys["keys"][0]["id"]
        status, new = await _call(s, "POST", f"{a}/api/keys/{old_id}/rotate", token, pid,
                                  {"grace": "1h"})
        assert status == 201
        for api in (a, b):
            for secret in (key, new["api_key"]):
                status, _ = await _call(s, "POST", f"{api}/api/ingest/metrics", body=point,
                                        api_key=secret)
                assert status == 202, status
        assert (await _call(s, "DELETE", f"{a}/api/keys/{old_id}", token, pid))[0] == 204
        status, _ = await _call(s, "POST", f"{b}/api/ingest/metrics", body=point, api_key=key)
        assert status == 401
        _, listed = await _call(s, "GET", f"{b}/api/keys", token, pid)
        statuses = {k["id"]: k["status"] for k in listed["keys"]}
        assert statuses == {old_id: "revoked", new["id"]: "active"}

        # -- the audit log saw all of it, in order
        _, audit = await _call(s, "GET", f"{b}/api/projects/{pid}/audit", token)
        actions = [e["action"] for e in audit["events"]]
        assert actions[:5] == ["key.revoke", "key.rotate", "key.create", "member.remove",
                               "member.role"]


async def test_a_principal_forged_in_the_shared_redis_is_refused(deployment: Stack) -> None:
    from redis.asyncio import Redis

    _configure(deployment)
    owner = json.loads(deployment.run("create-project", f"acc-{uuid.uuid4().hex[:8]}", "--json"))
    _, api = await deployment.start_api()
    forged = "opt_" + uuid.uuid4().hex
    body = json.dumps({"u": "evil", "t": "t", "a": True, "r": {owner["project_id"]: "owner"},
                       "x": 9e12}, separators=(",", ":")).encode()
    client = Redis.from_url(deployment.urls["redis"])
    try:
        key = f"{deployment.cache_prefix}cache:principal:{digest(forged)}"
        await client.set(key, b"0" * 64 + b"." + body, px=60_000)
        async with aiohttp.ClientSession() as s:
            status, doc = await _call(s, "GET", f"{api}/api/logs/query", forged,
                                      owner["project_id"])
        assert status == 401, doc
        # the genuine entry of a real token, copied under the forged token's key, fails too
        async with aiohttp.ClientSession() as s:
            assert (await _call(s, "GET", f"{api}/api/rules", owner["token"],
                                owner["project_id"]))[0] == 200
        genuine = await client.get(f"{deployment.cache_prefix}cache:principal:{digest(owner['token'])}")
        assert genuine is not None
        await client.set(key, genuine, px=60_000)
        async with aiohttp.ClientSession() as s:
            status, _ = await _call(s, "GET", f"{api}/api/rules", forged, owner["project_id"])
        assert status == 401
    finally:
        await client.aclose()


async def test_the_cli_manages_users_keys_and_tokens(deployment: Stack) -> None:
    _configure(deployment)
    email = f"ann-{uuid.uuid4().hex[:6]}@e2e.io"
    user = json.loads(deployment.run("admin", "create-user", email, "--admin"))
    assert user["admin"] is True and user["token"].startswith("opt_")
    project = json.loads(deployment.run("create-project", f"cli-{uuid.uuid4().hex[:8]}",
                                   "--owner", email, "--json"))
    pid = project["project_id"]
    # on the database
    created = _json_lines(deployment.run("keys", "create", "--project", pid, "--name", "edge"))[0]
    assert created["api_key"].startswith(created["prefix"])
    listed = _json_lines(deployment.run("keys", "list", "--project", pid))
    assert {k["name"] for k in listed} == {"default", "edge"}
    assert all("api_key" not in k for k in listed)
    rotated = _json_lines(deployment.run("keys", "rotate", "--project", pid, "--key", created["id"],
                                    "--grace", "0"))[0]
    assert rotated["name"] == "edge"
    tokens = _json_lines(deployment.run("tokens", "list", "--user", email))
    assert len(tokens) == 2 and all("token" not in t for t in tokens)
    made = _json_lines(deployment.run("tokens", "create", "--user", email, "--name", "laptop",
                                 "--ttl", "1h"))[0]
    # against a server, as that user, then as the operator (admin token)
    _, api = await deployment.start_api()
    mine = deployment.run("tokens", "list", "--server", api, "--token", made["token"])
    assert {t["name"] for t in _json_lines(mine)} >= {"laptop", "first token"}
    deployment.run("tokens", "revoke", "--server", api, "--token", made["token"], "--id", made["id"])
    async with aiohttp.ClientSession() as s:
        assert (await _call(s, "GET", f"{api}/api/tokens", made["token"]))[0] == 401
    over_http = _json_lines(deployment.run("keys", "list", "--project", pid, "--server", api))
    assert {k["status"] for k in over_http} == {"active", "revoked"}
    revoked = deployment.run("keys", "revoke", "--project", pid, "--key", rotated["id"],
                        "--server", api)
    assert "revoked" in revoked
    trail = _json_lines(deployment.run("audit", "--project", pid, "--limit", "3"))
    assert [e["action"] for e in trail] == ["key.revoke", "key.rotate", "key.create"]
    assert trail[0]["actor"] == "operator"  # the admin token, over HTTP
    over_http = _json_lines(deployment.run("audit", "--project", pid, "--server", api))
    assert over_http[:3] == trail


async def test_channel_secrets_go_in_through_the_api_and_never_come_out(
    deployment: Stack,
) -> None:
    from tests.integration.test_channel_secrets_at_rest import _pg_dump

    _configure(deployment)
    owner = json.loads(deployment.run("create-project", f"acc-{uuid.uuid4().hex[:8]}", "--json"))
    _, api = await deployment.start_api()
    token, pid = owner["token"], owner["project_id"]
    slack = {"name": "ops", "type": "slack",
             "target": "https://hooks.slack.com/services/T1/B1/E2ESLACKTOKEN"}
    hook = {"name": "hook", "type": "webhook", "target": "https://hooks.example.com/e2e",
            "secret": "E2EHMACSECRET-0123456789"}
    async with aiohttp.ClientSession() as s:
        for body in (slack, hook):
            status, doc = await _call(s, "POST", f"{api}/api/channels", token, pid, body)
            assert status == 201, doc
        status, listed = await _call(s, "GET", f"{api}/api/channels", token, pid)
    shown = json.dumps(listed)
    assert status == 200 and "E2ESLACKTOKEN" not in shown and "E2EHMACSECRET" not in shown
    dump = (await asyncio.to_thread(
        subprocess.run,
        [_pg_dump(), "-d", deployment.urls["database"], "-n", deployment.schema, "--data-only"],
        capture_output=True, text=True, timeout=120, check=True)).stdout
    assert pid in dump  # the dump holds this test's rows
    assert "E2ESLACKTOKEN" not in dump and "E2EHMACSECRET" not in dump
    assert "channels sealed" in deployment.run("secrets", "rotate")
