"""The explorer inside a host's application: examples/host_app.py mounts OpsPilot under
/observability, and the page (at /observability/ui/) calls the API under the same prefix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.browser.conftest import OUTPUT, ROOT

PORT = 22303  # the library suite's range (22300-22399)
BASE = f"http://127.0.0.1:{PORT}"
ADMIN = "admin-token-of-the-mounted-explorer-test"


def _env() -> dict[str, str]:
    """The example on its in-memory default, with an admin token to create the project."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSPILOT_")}
    return env | {"OPSPILOT_ADMIN_TOKEN": ADMIN}


def _call(path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(BASE + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


@pytest.fixture(scope="module")
def host() -> Iterator[dict[str, str]]:
    log = OUTPUT / "host-app.log"
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "examples" / "host_app.py"),
                                 "--port", str(PORT)],
                                env=_env(), stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(BASE + "/observability/healthz", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"host app exited: {log.read_text()}")
                time.sleep(0.2)
        else:
            pytest.fail(f"host app did not start: {log.read_text()}")
        project = _call("/observability/api/admin/projects", {"name": "mounted"},
                        {"Authorization": f"Bearer {ADMIN}"})
        now = datetime.now(UTC)
        points = [{"name": "checkout_ms", "value": 40.0 + i % 7, "service": "shop",
                   "timestamp": (now - timedelta(minutes=i)).isoformat()} for i in range(1, 50)]
        _call("/observability/api/ingest/metrics", {"metrics": points},
              {"X-API-Key": project["api_key"]})
        yield project
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_the_mounted_explorer_signs_in_and_charts(browser: Any, host: dict[str, str]) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
        page.goto(f"{BASE}/observability/")  # redirects to the prefixed page
        assert page.url == f"{BASE}/observability/ui/"
        page.wait_for_selector("#token", state="visible")
        page.fill("#token", host["token"])
        page.keyboard.press("Enter")
        page.wait_for_selector("#tabs", state="visible")  # /observability/api/me answered
        page.wait_for_selector('#metric option[value="checkout_ms"]', state="attached")
        page.select_option("#metric", "checkout_ms")
        page.click("#chart-it")
        page.wait_for_function("() => Number(document.querySelector('#chart')?.dataset.points) > 0")
        page.screenshot(path=str(OUTPUT / "mounted-explorer.png"))
    finally:
        context.close()
    assert problems == []
