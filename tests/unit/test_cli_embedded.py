"""The README's run path as a user takes it: `opspilot serve`, then create-project and demo
against it, then the curls' endpoints answer with the demo data."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent / "opspilot"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# where `serve` leaves its admin token for the commands after it (never the user's own)
STATE_DIR = tempfile.mkdtemp(prefix="opspilot-state-")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSPILOT_")}
    env["OPSPILOT_STATE_DIR"] = STATE_DIR
    return env


@pytest.fixture
def server() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [str(BIN), "serve", "--port", str(port)], env=_clean_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        # a loaded 2-core machine takes 15 s and more to import the AI stack
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            proc.kill()
            pytest.fail(f"serve did not start: {proc.communicate()[0]}")
        yield base
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, output
        assert "data lives in memory" in output
        assert f"admin token: in {STATE_DIR}" in output
        assert not (Path(STATE_DIR) / f"admin-token-{port}").exists(), "left after stop"


def _get(url: str, headers: dict[str, str]) -> dict:  # type: ignore[type-arg]
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_serve_create_project_and_demo(server: str) -> None:
    made = subprocess.run(
        [str(BIN), "create-project", "cli-test", "--json", "--server", server],
        env=_clean_env(), capture_output=True, text=True, check=True,
    )
    project = json.loads(made.stdout)
    assert project["api_key"].startswith("opk_") and project["token"].startswith("opt_")
    demo = subprocess.run(
        [str(BIN), "demo", "--server", server], env=_clean_env(), capture_output=True,
        text=True, check=True,
    )
    assert "metric points" in demo.stdout
    credentials = json.loads(next(line for line in demo.stdout.splitlines() if line.startswith("{")))
    headers = {"Authorization": f"Bearer {credentials['token']}",
               "X-Project-ID": credentials["project_id"]}
    deadline = time.time() + 10
    while True:  # the in-process worker stores what the API accepted
        series = _get(f"{server}/api/metrics/query?metric_name=latency_ms_p95"
                      "&service_name=checkout&time_bucket=5m", headers)
        logs = _get(f"{server}/api/logs/query?level=ERROR&limit=5", headers)
        if (series["points"] and logs["total"]) or time.time() > deadline:
            break
        time.sleep(0.2)
    assert len(series["points"]) >= 12
    assert logs["total"] > 0
    anomalies = _get(f"{server}/api/metrics/anomalies?metric_name=latency_ms_p95"
                     "&service_name=checkout", headers)
    assert anomalies["anomalies"], "the demo's spike should be found"
    spikes = _get(f"{server}/api/logs/error-spikes", headers)
    assert spikes["spikes"] >= 1
    (rule,) = _get(f"{server}/api/rules", headers)["rules"]
    assert rule["metric_name"] == "latency_ms_p95" and rule["enabled"]
    assert f"Explorer: {server}/ui/" in demo.stdout
    with urllib.request.urlopen(server + "/", timeout=10) as page:  # follows the redirect
        assert page.url == server + "/ui/" and b"OpsPilot Explorer" in page.read()


def test_serve_admin_surface_takes_only_the_token_it_wrote(server: str) -> None:
    port = server.rsplit(":", 1)[1]
    token_file = Path(STATE_DIR) / f"admin-token-{port}"
    assert token_file.stat().st_mode & 0o777 == 0o600
    # the channel-secret key serve keeps for itself: private, and kept across starts
    assert (Path(STATE_DIR) / "secret-key").stat().st_mode & 0o777 == 0o600
    request = urllib.request.Request(
        f"{server}/api/admin/projects", data=b'{"name": "sneaky"}',
        headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
    made = subprocess.run(
        [str(BIN), "create-project", "keys-test", "--json", "--server", server],
        env=_clean_env(), capture_output=True, text=True, check=True,
    )
    project = json.loads(made.stdout)
    listed = subprocess.run(
        [str(BIN), "keys", "list", "--project", project["project_id"], "--server", server,
         "--token", project["token"]],
        env=_clean_env(), capture_output=True, text=True, check=True,
    )
    keys = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [k["name"] for k in keys] == ["default"]
    assert project["api_key"].startswith(keys[0]["prefix"])
