"""deploy/grafana's OpsPilot-data datasource and example dashboard: every panel and variable
query, as Grafana would send it, answers with data from OpsPilot's Prometheus API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from opspilot.container import Container
from tests import promql_peer
from tests.unit.conftest import Tenant

GRAFANA = Path(__file__).parents[3] / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "data-dashboards").glob("*.json"))


def _expressions(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_the_datasource_sends_the_project_headers() -> None:
    text = (GRAFANA / "provisioning" / "datasources" / "opspilot-data.yml").read_text()
    for needed in ("uid: opspilot-data", "type: prometheus", "httpHeaderName1: Authorization",
                   "httpHeaderName2: X-Project-ID", "Bearer ${OPSPILOT_TOKEN}",
                   "${OPSPILOT_PROJECT_ID}"):
        assert needed in text
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        assert {p["datasource"]["uid"] for p in doc["panels"]} == {"opspilot-data"}


async def test_every_panel_answers_with_data(api: Any, container: Container,
                                             tenant: Tenant) -> None:
    data = promql_peer.generate(hours=1.0)
    await container.metric_store().write_batches(
        list(promql_peer.points(data, tenant.project_id)))
    start = promql_peer.START_MS / 1000
    span = {"start": str(start + 600), "end": str(start + 3600), "step": "60"}
    assert DASHBOARDS
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        values = await api.get("/api/v1/label/service/values", headers=tenant.query_headers,
                               params={"match[]": "http_requests_total", **span})
        assert (await values.json())["data"] == ["api", "db", "web"]
        for expr in _expressions(doc):
            query = expr.replace("$service", "api|db").replace("$__rate_interval", "2m")
            response = await api.post("/api/v1/query_range", headers=tenant.query_headers,
                                      data={"query": query, **span})
            body = await response.json()
            assert response.status == 200, (expr, body)
            assert body["data"]["result"], expr
