"""Issue #15 item 6: an unknown key or token is looked up in the store once, then answered
from the cache until it expires."""

from __future__ import annotations

import pytest

from opspilot.adapters.clock_and_ids import FixedClock
from opspilot.adapters.memory.cache import InMemoryCache
from opspilot.adapters.memory.tenancy import InMemoryTenancyStore
from opspilot.application.auth import Authenticator, PrincipalSeal
from opspilot.domain.errors import Unauthenticated
from opspilot.domain.tenancy import ApiKey, Token
from tests.unit.conftest import NOW


class CountingTenancy(InMemoryTenancyStore):
    """The in-memory store, counting the credential lookups that reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        self.lookups += 1
        return await super().find_api_key(key_hash)

    async def find_token(self, token_hash: str) -> Token | None:
        self.lookups += 1
        return await super().find_token(token_hash)


async def test_an_unknown_key_and_token_cost_one_lookup_each() -> None:
    tenancy = CountingTenancy()
    auth = Authenticator(tenancy, InMemoryCache(), FixedClock(NOW), PrincipalSeal(b"k" * 32),
                         unknown_ttl=60)
    for _ in range(5):
        with pytest.raises(Unauthenticated):
            await auth.ingest_identity("opk_guessed")
        with pytest.raises(Unauthenticated):
            await auth.principal("opt_guessed")
    assert tenancy.lookups == 2
