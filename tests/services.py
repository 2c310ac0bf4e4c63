"""One rule for every suite that needs a real service (PostgreSQL, OpenSearch, RabbitMQ,
Redis, Prometheus, a browser): when the service is missing the test skips locally, and fails
when services are required (`CI` set to anything but ""/0/false/no, or
`OPSPILOT_REQUIRE_SERVICES=1`), so that a missing service never turns CI green."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def services_required() -> bool:
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return ci or os.environ.get("OPSPILOT_REQUIRE_SERVICES") == "1"


def unavailable(service: str, reason: str) -> NoReturn:
    """Skip the test (or fail it, where services are required): `service` is missing."""
    if services_required():
        pytest.fail(f"{service} is required here (CI / OPSPILOT_REQUIRE_SERVICES): {reason}",
                    pytrace=False)
    pytest.skip(f"{service} not available: {reason}")
