"""Issue #15 items 11, 13, 14, 15: names without control characters; the aliases and
durations users type; a limiter outage logged once and reported by /readyz; no per-project
series on the unauthenticated /metrics unless enabled."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest

from opspilot.adapters.prometheus.api import ApiTelemetry
from opspilot.domain.errors import ServiceUnavailable
from opspilot.domain.ports import RateDecision
from opspilot.domain.storable import CONTROL_REASON
from opspilot.entrypoints.api.state import SERVICES

ROOT = Path(__file__).resolve().parents[3]
RULE = {"name": "r", "metric_name": "cpu", "threshold": 1.0}


@pytest.mark.parametrize(("path", "body"), [
    ("/api/rules", {**RULE, "name": "cpu\r\nBcc: x@example.com"}),
    ("/api/rules", {**RULE, "name": "tab\there"}),
    ("/api/channels", {"name": "ops\nteam", "type": "webhook", "target": "http://127.0.0.1:9/x"}),
])
async def test_control_characters_in_names_are_400(api: Any, tenant: Any, path: str,
                                                   body: dict[str, Any]) -> None:
    response = await api.post(path, json=body, headers=tenant.query_headers)
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["details"]["field"] == "name"
    assert error["message"] == f"name: {CONTROL_REASON}"


@pytest.mark.parametrize(("alias", "kind", "value"), [
    ("url", "webhook", "http://127.0.0.1:9/hook"),
    ("to", "email", "ops@example.com"),
    ("target", "webhook", "http://127.0.0.1:9/hook"),
])
async def test_channels_take_url_and_to_as_well_as_target(
    api: Any, tenant: Any, alias: str, kind: str, value: str
) -> None:
    response = await api.post("/api/channels", json={"name": "c", "type": kind, alias: value},
                              headers=tenant.query_headers)
    assert response.status == 201, await response.text()
    assert (await response.json())["target"].startswith(value.split("/hook")[0])


async def test_two_spellings_of_the_target_are_refused(api: Any, tenant: Any) -> None:
    response = await api.post("/api/channels", json={
        "name": "c", "type": "webhook", "url": "http://127.0.0.1:9/a",
        "target": "http://127.0.0.1:9/b"}, headers=tenant.query_headers)
    assert response.status == 400


@pytest.mark.parametrize(("given", "shown"), [
    ("0", "0"), ("0s", "0"), ("90s", "90s"), ("1m30s", "90s"), ("5m", "5m"), ("1h", "1h"),
    ("1h30m", "90m"), ("1d", "1d"),
])
async def test_for_duration_takes_prometheus_durations(
    api: Any, tenant: Any, given: str, shown: str
) -> None:
    response = await api.post("/api/rules", json={**RULE, "for_duration": given},
                              headers=tenant.query_headers)
    assert response.status == 201, await response.text()
    assert (await response.json())["for_duration"] == shown


@pytest.mark.parametrize("given", ["", "m", "1x", "30s1m", "-1s", "1.5m"])
async def test_other_for_durations_are_400(api: Any, tenant: Any, given: str) -> None:
    response = await api.post("/api/rules", json={**RULE, "for_duration": given},
                              headers=tenant.query_headers)
    assert response.status == 400
    assert (await response.json())["error"]["details"]["field"] == "for_duration"


class DownLimiter:
    """A limiter whose store is down (as the Redis adapter raises), then back."""

    def __init__(self) -> None:
        self.down = True

    async def hit(self, key: str, rate: float, burst: int, cost: int = 1) -> RateDecision:
        if self.down:
            raise ServiceUnavailable("redis: connection refused")
        return RateDecision(True, burst, burst - 1, 0.0, 0.0)


async def test_a_limiter_outage_is_logged_once_and_readyz_says_degraded(
    api: Any, tenant: Any, caplog: pytest.LogCaptureFixture
) -> None:
    svc = api.server.app[SERVICES]
    limiter = DownLimiter()
    svc.limiter = limiter
    svc.rate_limits = type(svc.rate_limits)(enabled=True)
    with caplog.at_level(logging.WARNING, logger="opspilot.api"):
        for _ in range(5):
            response = await api.get("/api/logs/query", headers=tenant.query_headers)
            assert response.status == 200  # fail open
        ready = await api.get("/readyz")
        doc = await ready.json()
        assert ready.status == 200
        assert doc["status"] == "degraded"
        assert doc["checks"]["rate limits"].startswith("degraded: failing open since")
        limiter.down = False
        await api.get("/api/logs/query", headers=tenant.query_headers)
        assert (await (await api.get("/readyz")).json())["status"] == "ready"
    outage = [r for r in caplog.records if "rate limits are OFF" in r.getMessage()]
    back = [r for r in caplog.records if "rate limiter is back" in r.getMessage()]
    assert len(outage) == 1 and len(back) == 1


def test_the_prometheus_alert_rule_is_valid_and_watches_the_failures() -> None:
    rules = ROOT / "deploy" / "prometheus" / "alerts.yml"
    assert "opspilot_rate_limiter_failures_total" in rules.read_text()
    assert "alerts.yml" in (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
    promtool = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True,
                              text=True, check=False)
    if promtool.returncode == 127:  # pragma: no cover - promtool ships with Prometheus
        pytest.skip("promtool not installed")
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr


async def test_metrics_list_no_project_ids_unless_enabled(api: Any, tenant: Any) -> None:
    response = await api.post("/api/ingest/metrics", headers=tenant.ingest_headers, json={
        "metrics": [{"name": "cpu", "value": 1.0, "timestamp": "2024-03-01T11:59:00Z"}]})
    assert response.status == 202
    text = await (await api.get("/metrics")).text()
    assert tenant.project_id not in text
    assert 'project="all"' in text
    enabled = ApiTelemetry(per_project=True)
    enabled.ingest_accepted.labels("metrics", enabled.project_label("p-1")).inc()
    from prometheus_client import generate_latest
    assert b'project="p-1"' in generate_latest(enabled.registry)
