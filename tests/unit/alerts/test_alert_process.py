"""The alert process as `opspilot alerts` runs it: --once, the loop, SIGTERM, telemetry."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import orjson
import pytest
from aiohttp import web
from dependency_injector import providers
from prometheus_client import generate_latest

from opspilot.adapters.clock_and_ids import SystemClock
from opspilot.adapters.memory.notify import RecordingNotifier
from opspilot.application.alerting import RuleSpec
from opspilot.domain.alerts import ChannelType
from opspilot.domain.ingest import MetricBatch
from opspilot.domain.metrics import MetricPoint
from opspilot.entrypoints.alert_scheduler import run_alert_process, run_alerts
from tests.unit.alerts.test_alert_api import _NoAnalyzer
from tests.unit.conftest import NOW


@pytest.fixture
async def hook(aiohttp_server: Any) -> Any:
    bodies: list[bytes] = []

    async def receive(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", receive)
    server = await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}/hook", bodies


async def _firing_rule(container: Any, target: str, at: Any = NOW) -> Any:
    import importlib.util

    if importlib.util.find_spec("opspilot.adapters.ai.in_process") is None:
        container.analyzer.override(providers.Object(_NoAnalyzer()))
    made = await container.provisioner().create_project("alerting")
    points = [MetricPoint(made.project_id, at - timedelta(minutes=m), "errors", 9.0, "api")
              for m in range(0, 5)]
    await container.metric_store().write_batches(
        [MetricBatch("e1", made.project_id, at, points)])
    alerts = container.alert_rules()
    channel = await alerts.create_channel(made.project_id, "hook", ChannelType.WEBHOOK, target)
    await alerts.create_rule(made.project_id, RuleSpec(
        name="errors", metric_name="errors", threshold=5.0, channels=(channel.id,)))
    return made.project_id


async def test_once_evaluates_and_delivers_through_real_channels(
    container: Any, hook: Any
) -> None:
    target, bodies = hook
    project_id = await _firing_rule(container, target)  # the fixture allows 127.0.0.1
    assert await run_alert_process(container, once=True) == 0
    (incident,) = await container.incidents().list_incidents(project_id)
    (body,) = bodies
    assert orjson.loads(body)["incident_id"] == incident.id
    # the same tick again, evaluated regardless of the lock: the states remember it
    assert await run_alert_process(container, once=True, force=True) == 0
    assert len(bodies) == 1
    assert len(await container.incidents().list_incidents(project_id)) == 1


async def test_the_loop_ticks_on_boundaries_and_stops_on_sigterm(container: Any) -> None:
    container.clock.override(providers.Object(SystemClock()))
    container.notifier.override(providers.Object(RecordingNotifier()))  # recorded, not sent
    container.config.alert_interval_seconds.from_value(0.2)
    telemetry = container.alert_telemetry()
    await _firing_rule(container, "https://hooks.example.com/never", SystemClock().now())
    stop = asyncio.Event()
    task = asyncio.create_task(run_alerts(container.alert_scheduler(), SystemClock(), stop,
                                          poll_seconds=0.05))
    await asyncio.sleep(1.1)
    stop.set()  # what the SIGTERM handler does
    assert await asyncio.wait_for(task, 2.0) == 0
    owned = telemetry.ticks.labels("owned")._value.get()
    assert 3 <= owned <= 7
    assert telemetry.rules_evaluated._value.get() == owned
    assert telemetry.incidents_opened._value.get() == 1  # one episode, however many ticks
    text = generate_latest(telemetry.registry).decode()
    assert 'opspilot_alert_notifications_total{channel_type="webhook",outcome="delivered"} 1.0' \
        in text
    assert "opspilot_alert_evaluation_duration_seconds_count" in text
