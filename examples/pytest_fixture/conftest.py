"""A fixture a host project can copy into its conftest.py: an in-memory OpsPilot per test.

Needs pytest-asyncio (this folder's pytest.ini sets `asyncio_mode = auto`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import opspilot


@pytest.fixture
async def ops() -> AsyncIterator[opspilot.OpsPilot]:
    """A fresh OpsPilot, all in memory whatever OPSPILOT_* the environment holds."""
    async with opspilot.OpsPilot.in_memory() as ops:
        yield ops


@pytest.fixture
async def project_id(ops: opspilot.OpsPilot) -> str:
    return (await ops.create_project("host-tests")).project_id
