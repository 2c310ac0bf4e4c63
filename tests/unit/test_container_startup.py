"""A starting process waits out a broker that is slow to answer, and still fails on one that
never does (the RabbitMQ resource's connect)."""

from __future__ import annotations

import pytest

from opspilot import container
from opspilot.domain.errors import ServiceUnavailable


class SlowBroker:
    """A queue whose first `failures` connects time out, as a loaded broker's did."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0

    async def connect(self) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ServiceUnavailable("message broker unavailable (connect): TimeoutError")


async def test_a_slow_broker_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(container.asyncio, "sleep", _no_wait)
    broker = SlowBroker(failures=container.STARTUP_CONNECT_ATTEMPTS - 1)
    await container._connect_with_retries(broker)
    assert broker.attempts == container.STARTUP_CONNECT_ATTEMPTS


async def test_an_absent_broker_still_fails_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(container.asyncio, "sleep", _no_wait)
    broker = SlowBroker(failures=10)
    with pytest.raises(ServiceUnavailable):
        await container._connect_with_retries(broker)
    assert broker.attempts == container.STARTUP_CONNECT_ATTEMPTS


async def _no_wait(seconds: float) -> None:
    return None
