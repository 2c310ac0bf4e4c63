"""A PromQL query past its time budget is cancelled: the store's read is cancelled (not left
running), and the caller gets Prometheus' timeout error."""

from __future__ import annotations

import asyncio

import pytest

from opspilot.adapters.memory.metrics import InMemoryMetricStore
from opspilot.application.promql.queries import PrometheusQueries, PromqlLimits, QueryOptions
from opspilot.domain.errors import QueryTimeout
from opspilot.domain.labels import SeriesSelection
from opspilot.domain.step_windows import StepValues, StepWindows


class StalledStore(InMemoryMetricStore):
    """A store whose step reads wait until released, recording whether they were cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.cancelled = 0

    async def select_step_values(self, selection: SeriesSelection, windows: StepWindows
                                 ) -> StepValues:
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return await super().select_step_values(selection, windows)


async def test_the_callers_timeout_cancels_the_read() -> None:
    store = StalledStore()
    queries = PrometheusQueries(store, PromqlLimits())
    with pytest.raises(QueryTimeout, match="query timed out in query execution"):
        await queries.instant("p", "up + ignoring(x) down", 1_000_000, QueryOptions(timeout_s=0.05))
    assert store.cancelled == 2  # both selectors' reads


async def test_the_servers_timeout_bounds_a_longer_caller_timeout() -> None:
    store = StalledStore()
    queries = PrometheusQueries(store, PromqlLimits(timeout_s=0.05))
    with pytest.raises(QueryTimeout):
        await queries.range("p", "up", 0, 60_000, 15_000, QueryOptions(timeout_s=3600))
    assert store.cancelled == 1


async def test_a_read_within_the_budget_answers() -> None:
    store = StalledStore()
    store.release.set()
    queries = PrometheusQueries(store, PromqlLimits(timeout_s=5))
    answer = await queries.instant("p", "up", 1_000_000, QueryOptions(timeout_s=5))
    assert answer == {"resultType": "vector", "result": []}
    assert store.cancelled == 0
