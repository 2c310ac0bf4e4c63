"""A host's tests using the `ops` fixture: its code reports to OpsPilot, the test reads back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import opspilot


async def checkout(ops: opspilot.OpsPilot, project_id: str, order: int, ok: bool) -> None:
    """The host code under test: it reports a latency point and a log line per order."""
    now = datetime.now(UTC)
    await ops.ingest_metrics(project_id, [opspilot.Metric("checkout_ms", 40.0 + order, now,
                                                          service="shop")])
    level = "INFO" if ok else "ERROR"
    await ops.ingest_logs(project_id, [opspilot.Log(level, f"order {order} {'paid' if ok else 'declined'}",
                                                    now, service="shop")])


async def test_the_host_reports_orders(ops: opspilot.OpsPilot, project_id: str) -> None:
    for order in range(5):
        await checkout(ops, project_id, order, ok=order != 3)
    await ops.drain()

    series = await ops.query_metrics(project_id, "checkout_ms", service="shop",
                                     aggregation="count", time_bucket="1h")
    assert sum(series.values) == 5
    declined = await ops.search_logs(project_id, levels=["ERROR"])
    assert [r.message for r in declined.records] == ["order 3 declined"]


async def test_an_alert_fires_on_slow_checkouts(ops: opspilot.OpsPilot, project_id: str) -> None:
    await ops.alerts.create_rule(project_id, opspilot.RuleSpec(
        name="slow checkout", metric_name="checkout_ms", threshold=100.0,
        window=timedelta(minutes=5),
    ))
    now = datetime.now(UTC)
    await ops.ingest_metrics(project_id, [opspilot.Metric("checkout_ms", 250.0, now)])
    await ops.drain()

    report = await ops.evaluate_rules(now + timedelta(seconds=1))

    assert len(report.fired) == 1
    (incident,) = await ops.alerts.list_incidents(project_id)
    assert incident.status is opspilot.IncidentStatus.OPEN


async def test_each_fixture_is_a_fresh_opspilot(ops: opspilot.OpsPilot, project_id: str) -> None:
    page = await ops.search_logs(project_id)
    assert page.total == 0
    with pytest.raises(opspilot.NotFound):
        await ops.search_logs("no-such-project")
