"""OpsPilot's Prometheus API against a real Prometheus, on the same samples.

A seeded data set (tests/promql_peer.py: counters with resets, gauges with gaps, a classic
histogram, several services and tag values, scrape jitter) goes into a Prometheus TSDB
(`promtool tsdb create-blocks-from openmetrics`, then `prometheus` on a free port and a
temporary data directory) and into OpsPilot's metric store (in-memory, then PostgreSQL). Every
query of the committed corpus (tests/integration/promql_corpus.jsonl, instant and range) goes
to both over HTTP; the answers must agree: same status or error type, same result type, same
label sets, same timestamps, values within 1e-9 relative. The pass count is printed.

Known, justified differences (docs/prometheus.md) are listed in KNOWN_DIFFERENCES; today
there are none.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from dependency_injector import providers

from opspilot.container import build_container, start_container, stop_container
from opspilot.entrypoints.api.app import create_app
from opspilot.entrypoints.assembly import api_services
from opspilot.settings import Settings
from tests import promql_peer
from tests.contract.conftest import fresh_database
from tests.services import services_required

KNOWN_DIFFERENCES: dict[str, str] = {}


@pytest.fixture(scope="module")
def dataset() -> list[promql_peer.SeriesData]:
    return promql_peer.generate()


def _require_prometheus() -> None:
    if promql_peer.available():
        return
    if services_required():
        pytest.fail("prometheus and promtool are required here (scripts/services installs them)")
    pytest.skip("prometheus/promtool not installed")


async def _opspilot(aiohttp_client: Any, dataset: list[promql_peer.SeriesData], store: Any
                    ) -> AsyncIterator[tuple[Any, dict[str, str]]]:
    settings = Settings(_env_file=None, database_url=None, opensearch_url=None, amqp_url=None,
                        redis_url=None, ai_url=None, rate_limits_enabled=False)
    container = build_container(settings)
    if store is not None:
        container.metric_store.override(providers.Object(store))
    await start_container(container)
    try:
        made = await container.provisioner().create_project("promql")
        metric_store = container.metric_store()
        await metric_store.write_batches(list(promql_peer.points(dataset, made.project_id)))
        client = await aiohttp_client(create_app(api_services(container)))
        yield client, {"Authorization": f"Bearer {made.token}", "X-Project-ID": made.project_id}
    finally:
        await stop_container(container)


def _request(case: dict[str, Any]) -> tuple[str, dict[str, str]]:
    if "time" in case:
        return "/api/v1/query", {"query": case["query"], "time": repr(case["time"])}
    return "/api/v1/query_range", {k: repr(case[k]) if k != "query" else case[k]
                                   for k in ("query", "start", "end", "step")}


async def _run_corpus(prometheus_url: str, client: Any, headers: dict[str, str]) -> list[str]:
    failures = []
    corpus = promql_peer.read_corpus()
    async with aiohttp.ClientSession() as session:
        for case in corpus:
            path, params = _request(case)
            async with session.post(prometheus_url + path, data=params) as response:
                theirs = await response.json()
            ours_response = await client.post(path, data=params, headers=headers)
            ours = await ours_response.json()
            problem = promql_peer.difference(theirs, ours)
            if problem and case["query"] not in KNOWN_DIFFERENCES:
                failures.append(f"{path} {params}: {problem}")
    passed = len(corpus) - len(failures)
    print(f"\nPromQL differential: {passed}/{len(corpus)} queries agree with Prometheus")
    return failures


@pytest.mark.parametrize("backend", ["memory", "postgres"])
async def test_answers_agree_with_prometheus(
    aiohttp_client: Any, dataset: list[promql_peer.SeriesData], backend: str
) -> None:
    _require_prometheus()
    assert len(promql_peer.read_corpus()) >= 200
    async with promql_peer.prometheus_on(dataset, promql_peer.free_port()) as url:
        if backend == "memory":
            async for client, headers in _opspilot(aiohttp_client, dataset, None):
                failures = await _run_corpus(url, client, headers)
        else:
            async with fresh_database(now=lambda: promql_peer.EPOCH) as db:
                async for client, headers in _opspilot(aiohttp_client, dataset, db.metric_store):
                    failures = await _run_corpus(url, client, headers)
    limit = int(os.environ.get("OPSPILOT_PROMQL_SHOW", "15"))
    assert not failures, f"{len(failures)} differ:\n" + "\n".join(failures[:limit])


def test_the_committed_corpus_is_the_generated_one() -> None:
    assert promql_peer.read_corpus() == promql_peer.corpus()
