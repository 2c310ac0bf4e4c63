"""The accounts API tests of tests/unit/api/test_accounts_api.py, run again with the tenancy
store on the real PostgreSQL and the principal cache on the real Redis: the role matrix,
role changes applied at once, token expiry and revocation, key rotation with its grace (the
clock moved by the test), the audit log, a forged cache entry."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.fernet import Fernet

from opspilot.adapters.clock_and_ids import FixedClock
from opspilot.container import Container, build_container, start_container, stop_container
from opspilot.entrypoints.api.app import create_app
from opspilot.entrypoints.assembly import api_services
from opspilot.settings import Settings
from tests.contract.conftest import database_url_or_skip
from tests.contract.redis_fixtures import drop_keys, redis_for_test, redis_url
from tests.unit.api import test_accounts_api as unit
from tests.unit.conftest import ADMIN_TOKEN, NOW, Tenant, new_tenant

pytestmark = pytest.mark.integration


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
async def container(clock: FixedClock) -> AsyncIterator[Container]:
    import asyncpg

    from opspilot.adapters.postgres.database import asyncpg_dsn
    from opspilot.adapters.postgres.migrate import migrate

    database = await database_url_or_skip()
    async with redis_for_test():
        pass  # waits for Redis, or skips / fails
    schema, prefix = f"t_acc_{uuid.uuid4().hex[:10]}", f"t-acc-{uuid.uuid4().hex[:10]}:"
    await migrate(database, schema)
    settings = Settings(
        _env_file=None, database_url=database, database_schema=schema, redis_url=redis_url(),
        cache_prefix=prefix, opensearch_url=None, amqp_url=None, ai_url=None,
        rate_limits_enabled=False, admin_token=ADMIN_TOKEN,
        secret_key=Fernet.generate_key().decode(),
    )
    built = build_container(settings)
    built.clock.override(clock)
    await start_container(built)
    try:
        yield built
    finally:
        async with redis_for_test() as client:
            await drop_keys(client, prefix)
        await stop_container(built)
        conn = await asyncpg.connect(asyncpg_dsn(database))
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


@pytest.fixture
async def api(aiohttp_client: Any, container: Container) -> Any:
    return await aiohttp_client(create_app(api_services(container)))


@pytest.fixture
async def tenant(container: Container) -> Tenant:
    return await new_tenant(container, "alpha")  # each test has a schema of its own


@pytest.fixture
async def other_tenant(container: Container) -> Tenant:
    return await new_tenant(container, "beta")


async def test_the_tenancy_store_and_cache_are_the_real_ones(container: Container) -> None:
    assert container.config.backends()["sql"] == "postgres"
    assert container.config.backends()["cache"] == "redis"


async def test_role_matrix(api: Any, tenant: Tenant, other_tenant: Tenant,
                           container: Container) -> None:
    await unit.test_every_role_against_every_endpoint(api, tenant, other_tenant, container)


async def test_role_changes_apply_at_once(api: Any, tenant: Tenant) -> None:
    await unit.test_role_changes_apply_at_once(api, tenant)


async def test_owners_are_protected(api: Any, tenant: Tenant, container: Container) -> None:
    await unit.test_admins_cannot_touch_owners_and_a_project_keeps_one(api, tenant, container)


async def test_tokens_expire_and_revoke(api: Any, tenant: Tenant, other_tenant: Tenant,
                                        clock: FixedClock) -> None:
    await unit.test_tokens_expire_list_without_secrets_and_revoke(api, tenant, clock)
    await unit.test_a_token_is_revoked_at_once_and_only_by_its_user(api, tenant, other_tenant)


async def test_key_rotation_grace_and_revocation(api: Any, tenant: Tenant,
                                                 clock: FixedClock) -> None:
    await unit.test_keys_rotate_with_a_grace_and_revoke_at_once(api, tenant, clock)


async def test_audit_log(api: Any, tenant: Tenant) -> None:
    await unit.test_owners_read_who_changed_what(api, tenant)


async def test_forged_cache_entry(api: Any, tenant: Tenant, other_tenant: Tenant,
                                  container: Container) -> None:
    await unit.test_a_forged_cache_entry_is_refused(api, tenant, other_tenant, container)
