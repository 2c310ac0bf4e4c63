"""The three examples of docs/embedding.md run as written (from the source tree here; from
the installed wheel in tests/packaging)."""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OPSPILOT_")}


def test_the_script_ingests_and_queries_without_http() -> None:
    done = subprocess.run([sys.executable, EXAMPLES / "ingest_and_query.py"], env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("accepted 60 points")
    assert "highest 900 ms" in lines[1]
    assert len(ast.literal_eval(lines[2].removeprefix("anomalies at "))) == 1  # the spike
    assert lines[3].startswith("10 logs match 'timeout'")
    assert lines[-1] == "refused, naming the field: metrics[0].name"


async def test_the_host_app_answers_its_routes_and_opspilots(
    aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin = "an-admin-token-of-24-characters-or-more"
    monkeypatch.setenv("OPSPILOT_ADMIN_TOKEN", admin)  # the example reads OPSPILOT_* settings
    spec = importlib.util.spec_from_file_location("host_app", EXAMPLES / "host_app.py")
    assert spec is not None and spec.loader is not None
    host_app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(host_app)
    client = await aiohttp_client(await host_app.create_app())

    hello = await client.get("/hello")
    assert (await hello.json())["hello"] == "from the host"
    made = await client.post("/observability/api/admin/projects", json={"name": "example"},
                             headers={"Authorization": f"Bearer {admin}"})
    assert made.status == 201 and made.headers["X-Served-By"] == "host-app"
    ready = await client.get("/observability/readyz")
    assert (await ready.json())["status"] == "ready"


def test_the_pytest_fixture_serves_a_hosts_tests() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         EXAMPLES / "pytest_fixture"], env=_env(), capture_output=True, text=True, timeout=300,
        cwd=EXAMPLES / "pytest_fixture",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout
