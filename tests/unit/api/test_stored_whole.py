"""Issue #15 item 2 on the in-memory adapters (tests/stored_whole.py has the property)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from opspilot.settings import Settings
from tests.stored_whole import (
    Pipeline,
    test_accepted_logs_are_stored_whole,
    test_accepted_metrics_are_stored_whole,
)
from tests.unit.conftest import NOW


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Pipeline]:
    settings = Settings(_env_file=None, database_url=None, opensearch_url=None, amqp_url=None,
                        redis_url=None, ai_url=None, rate_limits_enabled=False)
    running = Pipeline(settings, lambda c: c.memory_queue(), NOW)
    running.start()
    yield running
    running.stop()



__all__ = ["test_accepted_logs_are_stored_whole", "test_accepted_metrics_are_stored_whole"]
