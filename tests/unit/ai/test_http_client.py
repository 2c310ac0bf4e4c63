"""HttpAnalyzer against real aiohttp servers on local ports: the real AI app, and small real
apps that are slow or failing on purpose. No mocks."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
from aiohttp import web

from opspilot.adapters.ai.http_client import HttpAnalyzer
from opspilot.adapters.ai.in_process import InProcessAnalyzer
from opspilot.domain.analysis import AnomalyMethod, AnomalyRequest, DataPoint, LogLine
from opspilot.domain.errors import LimitExceeded, ServiceUnavailable, ValidationError
from opspilot.entrypoints.ai_service import AiLimits, create_ai_app

START = datetime(2024, 3, 1, tzinfo=UTC)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def spike_request(n: int = 120, method: AnomalyMethod = AnomalyMethod.ROBUST) -> AnomalyRequest:
    values = [50.0 + (i % 5) for i in range(n)]
    values[n * 5 // 6] = 400.0
    points = [DataPoint(START + timedelta(minutes=i), v) for i, v in enumerate(values)]
    return AnomalyRequest("latency", points, method)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Switch:
    """Answers 503 while `failing` (or for the first `fail_first` calls), counting hits."""

    def __init__(self, failing: bool = False, fail_first: int = 0) -> None:
        self.failing = failing
        self.fail_first = fail_first
        self.hits = 0

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.hits += 1
        if self.failing or self.hits <= self.fail_first:
            return web.json_response({"error": {"code": "down", "message": "down",
                                                 "details": {}}}, status=503)
        return await handler(request)


async def serve(aiohttp_server: Any, switch: Switch | None = None,
                limits: AiLimits = AiLimits()) -> str:
    app = create_ai_app(InProcessAnalyzer(), limits=limits)
    if switch is not None:
        app.middlewares.insert(0, switch.middleware)
    server = await aiohttp_server(app)
    return str(server.make_url("/"))


@pytest.fixture
async def ai_url(aiohttp_server: Any) -> str:
    return await serve(aiohttp_server)


@pytest.mark.parametrize(("include_scores", "cut"), [(False, None), (True, None), (False, 101)])
async def test_anomalies_round_trip_like_in_process(ai_url: str, include_scores: bool,
                                                   cut: int | None) -> None:
    request = spike_request()
    request = attrs.evolve(request, include_scores=include_scores,
                           points=request.points[:cut])  # cut: the spike is still ongoing
    async with HttpAnalyzer(ai_url) as remote:
        got = await remote.detect_anomalies(request)
    want = await InProcessAnalyzer().detect_anomalies(request)
    assert got == want  # scores, deviations and expectations survive JSON exactly
    assert got.anomalies[0].timestamp == START + timedelta(minutes=100)  # aware datetimes
    assert (got.scores is not None) == include_scores
    assert (got.ongoing is not None) == (cut is not None)


async def test_clusters_round_trip(ai_url: str) -> None:
    lines = [LogLine(f"job {i} done in {i} ms", "INFO") for i in range(6)] + [LogLine("boom")]
    async with HttpAnalyzer(ai_url) as remote:
        first, second = await remote.cluster_logs(lines, include_members=True)
    assert (first.pattern, first.count, first.members) == ("job <*> done in <*>", 6,
                                                           tuple(range(6)))
    assert second.levels == {"UNKNOWN": 1} and second.members == (6,)


async def test_a_4xx_is_a_validation_error_naming_the_field(ai_url: str) -> None:
    naive = AnomalyRequest("m", [DataPoint(datetime(2024, 3, 1, 0, i), 1.0) for i in range(20)])
    async with HttpAnalyzer(ai_url, failure_threshold=1) as remote:
        with pytest.raises(ValidationError) as few:
            await remote.detect_anomalies(spike_request(5))
        with pytest.raises(ValidationError) as zone:
            await remote.detect_anomalies(naive)
        assert not remote.breaker.is_open  # the service answered: it is healthy
    assert few.value.field == "data_points" and "at least" in few.value.message
    assert zone.value.field == "data_points[0].timestamp"


async def test_a_limit_is_a_limit_error(aiohttp_server: Any) -> None:
    url = await serve(aiohttp_server, limits=AiLimits(max_logs=3))
    async with HttpAnalyzer(url) as remote:
        with pytest.raises(LimitExceeded) as caught:
            await remote.cluster_logs([LogLine("x")] * 4)
    assert caught.value.field == "logs"


async def test_5xx_is_retried_with_backoff(aiohttp_server: Any) -> None:
    switch = Switch(fail_first=2)
    url = await serve(aiohttp_server, switch)
    async with HttpAnalyzer(url, retries=2, backoff=0.01) as remote:
        assert await remote.detect_anomalies(spike_request())
    assert switch.hits == 3


async def test_retries_run_out_into_service_unavailable(aiohttp_server: Any) -> None:
    switch = Switch(failing=True)
    url = await serve(aiohttp_server, switch)
    async with HttpAnalyzer(url, retries=2, backoff=0.01) as remote:
        with pytest.raises(ServiceUnavailable):
            await remote.detect_anomalies(spike_request())
    assert switch.hits == 3


async def test_circuit_opens_then_half_opens(aiohttp_server: Any) -> None:
    switch, clock = Switch(failing=True), Clock()
    url = await serve(aiohttp_server, switch)
    async with HttpAnalyzer(url, retries=0, failure_threshold=3, cooldown=60,
                            clock=clock) as remote:
        for _ in range(3):
            with pytest.raises(ServiceUnavailable):
                await remote.detect_anomalies(spike_request())
        assert remote.breaker.is_open and switch.hits == 3
        with pytest.raises(ServiceUnavailable) as refused:
            await remote.detect_anomalies(spike_request())
        assert switch.hits == 3 and refused.value.retry_after == pytest.approx(60)
        clock.now += 61  # cooldown over: one trial, which fails and re-opens
        with pytest.raises(ServiceUnavailable):
            await remote.detect_anomalies(spike_request())
        assert switch.hits == 4 and remote.breaker.is_open
        switch.failing = False
        clock.now += 61  # the next trial succeeds and closes the circuit
        assert await remote.detect_anomalies(spike_request())
        assert not remote.breaker.is_open and remote.breaker.failures == 0


async def test_a_slow_service_times_out_then_trips_the_circuit(aiohttp_server: Any) -> None:
    release = asyncio.Event()
    hits = 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        await asyncio.wait_for(release.wait(), 10)
        return web.json_response({"anomalies": []})

    app = web.Application()
    app.router.add_post("/ai/anomaly", slow)
    url = str((await aiohttp_server(app)).make_url("/"))
    try:
        async with HttpAnalyzer(url, timeout=0.3, failure_threshold=2) as remote:
            for _ in range(2):
                started = time.perf_counter()
                with pytest.raises(ServiceUnavailable, match="did not answer"):
                    await remote.detect_anomalies(spike_request())
                assert time.perf_counter() - started < 1.5  # one attempt, not three
            started = time.perf_counter()
            with pytest.raises(ServiceUnavailable, match="circuit is open"):
                await remote.detect_anomalies(spike_request())
            assert time.perf_counter() - started < 0.1
        assert hits == 2
    finally:
        release.set()


async def test_nothing_listening_is_service_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with HttpAnalyzer(f"http://127.0.0.1:{port}", retries=1, backoff=0.01) as remote:
        with pytest.raises(ServiceUnavailable, match="unavailable"):
            await remote.cluster_logs([LogLine("x")])


async def test_a_closed_client_refuses(ai_url: str) -> None:
    remote = HttpAnalyzer(ai_url)
    await remote.start()
    await remote.close()
    with pytest.raises(ServiceUnavailable, match="closed"):
        await remote.cluster_logs([LogLine("x")])
