"""`opspilot serve` with OPSPILOT_DATABASE_URL keeps projects and metrics across a restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from tests.contract.conftest import database_url_or_skip
from tests.unit.conftest import ADMIN_HEADERS, ADMIN_TOKEN
from tests.unit.test_cli_embedded import _free_port

BIN = Path(sys.executable).parent / "opspilot"


@pytest.fixture
async def schema_env() -> Iterator[dict[str, str]]:  # type: ignore[misc]
    url = await database_url_or_skip()
    schema = f"t_serve_{uuid.uuid4().hex[:10]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSPILOT_")}
    env.update(OPSPILOT_DATABASE_URL=url, OPSPILOT_DATABASE_SCHEMA=schema,
               OPSPILOT_ADMIN_TOKEN=ADMIN_TOKEN)
    yield env
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def _start(env: dict[str, str], port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen([str(BIN), "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
            return proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    proc.kill()
    pytest.fail(f"serve did not become ready: {proc.communicate()[0]}")


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    return output


def _call(url: str, headers: dict[str, str], body: object | None = None) -> dict:  # type: ignore[type-arg]
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={**headers, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_projects_and_metrics_survive_a_restart(schema_env: dict[str, str]) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _start(schema_env, port)
    try:
        project = _call(f"{base}/api/admin/projects", ADMIN_HEADERS, {"name": "persisted"})
        # Within retention: yesterday's 10:00 hour (UTC), whole hour bucket in the past.
        hour = (datetime.now(UTC) - timedelta(days=1)).replace(hour=10, minute=0, second=0,
                                                               microsecond=0)
        points = [{"name": "cpu", "value": float(i), "service": "api",
                   "timestamp": (hour + timedelta(minutes=i)).isoformat()} for i in range(30)]
        accepted = _call(f"{base}/api/ingest/metrics", {"X-API-Key": project["api_key"]},
                         {"metrics": points})
        assert accepted["accepted"] == 30  # stopped at once: SIGTERM drains the worker
    finally:
        output = _stop(proc)
    assert "sql=postgres" in output
    proc = _start(schema_env, port)
    try:
        headers = {"Authorization": f"Bearer {project['token']}",
                   "X-Project-ID": project["project_id"]}
        window = urllib.parse.urlencode({
            "start_time": hour.isoformat(), "end_time": (hour + timedelta(hours=1)).isoformat()})
        series = _call(f"{base}/api/metrics/query?metric_name=cpu&service_name=api&{window}"
                       "&aggregation=count&time_bucket=1h", headers)
        assert [p["value"] for p in series["points"]] == [30.0]
    finally:
        _stop(proc)
