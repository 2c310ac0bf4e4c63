"""Anomaly scores end to end over the real edges: points in PostgreSQL, the alert engine's
anomaly rule and a bucketed query, judged by `opspilot ai` over HTTP (HttpAnalyzer).

Needs OPSPILOT_DATABASE_URL; skips without it unless CI or OPSPILOT_REQUIRE_SERVICES=1.
The AI service is served by the test on a port from OPSPILOT_TEST_AI_PORTS ("low-high", a
session's own range), else one the OS picks."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import attrs
from aiohttp import web

from opspilot.adapters.ai.http_client import HttpAnalyzer
from opspilot.adapters.ai.in_process import InProcessAnalyzer
from opspilot.adapters.clock_and_ids import FixedClock, UuidGenerator
from opspilot.adapters.memory.notify import RecordingNotifier
from opspilot.application.alerting import (
    AlertRules,
    NotificationDispatcher,
    RuleEvaluator,
    RuleSpec,
)
from opspilot.domain.alerts import RuleKind
from opspilot.domain.analysis import (
    DEFAULT_ANOMALY_THRESHOLD,
    AnomalyRequest,
    DataPoint,
)
from opspilot.domain.ingest import MetricBatch
from opspilot.domain.metrics import Aggregation, MetricPoint, MetricQuery, SeriesSelector
from opspilot.domain.timewindow import Bucketing, TimeRange
from opspilot.entrypoints.ai_service import create_ai_app
from tests.contract.conftest import fresh_database

T0 = datetime(2024, 3, 1, 6, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
SPIKE = 250
A, B = "project-a", "project-b"


def free_port() -> int:
    low, _, high = os.environ.get("OPSPILOT_TEST_AI_PORTS", "0-0").partition("-")
    for port in range(int(low), int(high) + 1):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(probe.getsockname()[1])  # port 0: the one the OS chose
    raise RuntimeError(f"no free port in {low}-{high}")


@contextlib.asynccontextmanager
async def ai_service() -> AsyncIterator[str]:
    runner = web.AppRunner(create_ai_app(InProcessAnalyzer()))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def latency(project_id: str) -> list[MetricPoint]:
    values = [50.0 + (i % 5) for i in range(300)]
    values[SPIKE] = 400.0
    return [MetricPoint(project_id, T0 + i * MINUTE, "latency", v, "api")
            for i, v in enumerate(values)]


async def test_an_anomaly_rule_fires_on_the_spike_with_its_score() -> None:
    async with fresh_database() as db, ai_service() as url, HttpAnalyzer(url) as analyzer:
        await db.metric_store.write_batches([MetricBatch("m1", A, T0, latency(A))])
        clock = FixedClock(T0)
        dispatcher = NotificationDispatcher(RecordingNotifier(), db.channel_store,
                                            db.incident_store, clock)
        rules = AlertRules(db.rule_store, db.channel_store, db.incident_store, dispatcher,
                           clock, UuidGenerator(), analyzer)
        evaluator = RuleEvaluator(db.metric_store, db.rule_store, db.incident_store,
                                  dispatcher, analyzer)
        spec = RuleSpec(name="odd latency", metric_name="latency", service_name="api",
                        kind=RuleKind.ANOMALY, window=MINUTE)
        mine = await rules.create_rule(A, spec)
        theirs = await rules.create_rule(B, spec)  # same metric name, another project
        assert mine.threshold == DEFAULT_ANOMALY_THRESHOLD
        for minute in (SPIKE - 1, SPIKE, SPIKE + 1):  # the last full bucket is minute − 1
            clock.current = T0 + minute * MINUTE + timedelta(seconds=30)
            await evaluator.evaluate(await db.rule_store.enabled_rules(), clock.current)
        (incident,) = await db.incident_store.list_incidents(A)
        assert incident.rule_id == mine.id and incident.values == (400.0,)
        assert incident.started_at == T0 + (SPIKE + 1) * MINUTE + timedelta(seconds=30)
        assert await db.incident_store.list_incidents(B) == []  # B's series is empty
        (state,) = (await db.rule_store.get_states([theirs.id])).values()
        assert state.incident_id is None


async def test_an_anomaly_incident_stays_open_while_the_series_is_off() -> None:
    # A step from ~52 to ~202 at minute 250, in PostgreSQL, judged over HTTP: the incident
    # opens on the step's bucket, stays open (recording values) while the detector still
    # expects the old level, and resolves once the new level is expected.
    values = [50.0 + (i % 5) + 150.0 * (i >= SPIKE) for i in range(320)]
    points = [MetricPoint(A, T0 + i * MINUTE, "latency", v, "api") for i, v in enumerate(values)]
    async with fresh_database() as db, ai_service() as url, HttpAnalyzer(url) as analyzer:
        await db.metric_store.write_batches([MetricBatch("m1", A, T0, points)])
        clock = FixedClock(T0)
        dispatcher = NotificationDispatcher(RecordingNotifier(), db.channel_store,
                                            db.incident_store, clock)
        rules = AlertRules(db.rule_store, db.channel_store, db.incident_store, dispatcher,
                           clock, UuidGenerator(), analyzer)
        evaluator = RuleEvaluator(db.metric_store, db.rule_store, db.incident_store,
                                  dispatcher, analyzer)
        await rules.create_rule(A, RuleSpec(name="step", metric_name="latency",
                                            service_name="api", kind=RuleKind.ANOMALY,
                                            window=MINUTE))
        states = []
        for minute in range(SPIKE, SPIKE + 60):  # the last full bucket is minute − 1
            clock.current = T0 + (minute + 1) * MINUTE + timedelta(seconds=30)
            await evaluator.evaluate(await db.rule_store.enabled_rules(), clock.current)
            (incident,) = await db.incident_store.list_incidents(A)
            states.append(incident.status.value)
        assert states[:6] == ["open"] * 6  # it used to resolve on the next tick
        assert states[-1] == "resolved" and "open" not in states[states.index("resolved"):]
        (incident,) = await db.incident_store.list_incidents(A)
        assert incident.started_at == T0 + (SPIKE + 1) * MINUTE + timedelta(seconds=30)
        assert len(incident.values) > 6


async def test_a_bucketed_series_gets_one_score_per_bucket_over_http() -> None:
    async with fresh_database() as db, ai_service() as url, HttpAnalyzer(url) as analyzer:
        await db.metric_store.write_batches([MetricBatch("m1", A, T0, latency(A))])
        query = MetricQuery(A, SeriesSelector("latency", "api", {}),
                            TimeRange(T0, T0 + 300 * MINUTE), Aggregation.AVG,
                            Bucketing(MINUTE))
        (series,) = await db.metric_store.query([query])
        points = [DataPoint(p.bucket, p.value) for p in series.points]
        request = AnomalyRequest("latency", points, include_scores=True)
        remote = await analyzer.detect_anomalies(request)
        assert remote == await InProcessAnalyzer().detect_anomalies(request)
        assert remote.scores is not None and len(remote.scores) == 300
        assert max(range(300), key=remote.scores.__getitem__) == SPIKE
        (hit,) = remote.anomalies
        assert hit.timestamp == T0 + SPIKE * MINUTE and hit.score >= DEFAULT_ANOMALY_THRESHOLD
        doubled = attrs.evolve(request, points=[*points[:SPIKE + 1], points[SPIKE],
                                                *points[SPIKE + 1:]])
        again = await analyzer.detect_anomalies(doubled)  # a repeated timestamp is accepted
        assert again.anomalies == remote.anomalies and again.scores is not None
        assert len(again.scores) == 301
