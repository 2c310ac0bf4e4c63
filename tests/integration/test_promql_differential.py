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


_S = promql_peer.START_MS / 1000
# The API's query options, each case once as an instant and once as a range query. Prometheus
# 2.42 reads `stats` and `timeout` from the request; its lookback and per-step statistics are
# server flags (`lookback_delta` arrived in the API later), so the cases with a `lookback` go
# to a second Prometheus started with --query.lookback-delta and per-step stats enabled, and
# OpsPilot gets the same lookback as the `lookback_delta` parameter.
FLAGGED_LOOKBACK = "1m"
FLAGS = (f"--query.lookback-delta={FLAGGED_LOOKBACK}", "--enable-feature=promql-per-step-stats")
OPTION_CASES: list[dict[str, Any]] = [
    {"query": "sum by (service) (rate(http_requests_total[5m]))", "stats": "all"},
    {"query": "cpu_usage", "stats": "all"},
    {"query": "cpu_usage", "stats": "true"},
    {"query": "max_over_time(cpu_usage[2m]) > 0.1", "stats": "all"},
    {"query": "cpu_usage", "timeout": "0"},
    {"query": "cpu_usage", "timeout": "1m"},
    {"query": "cpu_usage", "timeout": "later"},
]
LOOKBACK_CASES: list[dict[str, Any]] = [
    {"query": "queue_depth"},
    {"query": "cpu_usage"},
    {"query": "sum by (service) (queue_depth) / on(service) group_left count(cpu_usage)"},
    {"query": "temperature offset 10m", "stats": "all"},
    {"query": "cpu_usage + 0", "stats": "all"},
    {"query": "rate(http_requests_total[5m]) + 0", "stats": "all"},
]


def _option_requests(cases: list[dict[str, Any]]) -> list[tuple[str, dict[str, str]]]:
    out = []
    for case in cases:
        extra = {k: v for k, v in case.items() if k != "query"}
        out.append(("/api/v1/query", {"query": case["query"], "time": repr(_S + 5_417.5),
                                      **extra}))
        out.append(("/api/v1/query_range", {"query": case["query"], "start": repr(_S + 3_600),
                                            "end": repr(_S + 7_200), "step": "150", **extra}))
    return out


def _stats_difference(prometheus: dict[str, Any], opspilot: dict[str, Any], per_step: bool
                      ) -> str | None:
    """Both have `stats` or neither, with the same keys and the same samples counted (per
    step too where that Prometheus counts per step)."""
    theirs = (prometheus.get("data") or {}).get("stats")
    ours = (opspilot.get("data") or {}).get("stats")
    if (theirs is None) != (ours is None):
        return f"stats {theirs is not None} vs {ours is not None}"
    if theirs is None:
        return None
    if set(theirs["timings"]) != set(ours["timings"]):
        return f"timings {sorted(theirs['timings'])} vs {sorted(ours['timings'])}"
    t, o = dict(theirs["samples"]), dict(ours["samples"])
    if not per_step:
        o.pop("totalQueryableSamplesPerStep", None)
    if set(t) != set(o):
        return f"samples {sorted(t)} vs {sorted(o)}"
    if t["totalQueryableSamples"] != o["totalQueryableSamples"]:
        return f"totalQueryableSamples {t['totalQueryableSamples']} vs {o['totalQueryableSamples']}"
    if t.get("totalQueryableSamplesPerStep") != o.get("totalQueryableSamplesPerStep"):
        return "totalQueryableSamplesPerStep differ"
    return None


async def _run_options(prometheus_url: str, client: Any, headers: dict[str, str],
                       requests: list[tuple[str, dict[str, str]]], ours_extra: dict[str, str],
                       per_step: bool) -> list[str]:
    failures = []
    async with aiohttp.ClientSession() as session:
        for path, params in requests:
            async with session.post(prometheus_url + path, data=params) as response:
                theirs = await response.json()
            ours = await (await client.post(path, data={**params, **ours_extra},
                                            headers=headers)).json()
            problem = (promql_peer.difference(theirs, ours)
                       or _stats_difference(theirs, ours, per_step))
            if problem:
                failures.append(f"{path} {params} {ours_extra}: {problem}")
    print(f"query options: {len(requests) - len(failures)}/{len(requests)} requests agree")
    return failures


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
        async for client, headers in _opspilot_on(backend, aiohttp_client, dataset):
            failures = await _run_corpus(url, client, headers)
            failures += await _run_options(url, client, headers,
                                           _option_requests(OPTION_CASES), {}, False)
    limit = int(os.environ.get("OPSPILOT_PROMQL_SHOW", "15"))
    assert not failures, f"{len(failures)} differ:\n" + "\n".join(failures[:limit])


@pytest.mark.parametrize("backend", ["memory", "postgres"])
async def test_lookback_delta_and_per_step_stats_agree_with_prometheus_flags(
    aiohttp_client: Any, dataset: list[promql_peer.SeriesData], backend: str
) -> None:
    _require_prometheus()
    async with promql_peer.prometheus_on(dataset, promql_peer.free_port(), FLAGS) as url:
        async for client, headers in _opspilot_on(backend, aiohttp_client, dataset):
            failures = await _run_options(url, client, headers, _option_requests(LOOKBACK_CASES),
                                          {"lookback_delta": FLAGGED_LOOKBACK}, True)
    assert not failures, "\n".join(failures)


async def _opspilot_on(backend: str, aiohttp_client: Any, dataset: list[promql_peer.SeriesData]
                       ) -> AsyncIterator[tuple[Any, dict[str, str]]]:
    if backend == "memory":
        async for found in _opspilot(aiohttp_client, dataset, None):
            yield found
        return
    async with fresh_database(now=lambda: promql_peer.EPOCH) as db:
        async for found in _opspilot(aiohttp_client, dataset, db.metric_store):
            yield found


def test_the_committed_corpus_is_the_generated_one() -> None:
    assert promql_peer.read_corpus() == promql_peer.corpus()
