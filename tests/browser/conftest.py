"""Browser tests: Debian's Chromium (/usr/bin/chromium) driven by Playwright for Python,
against an `opspilot serve` this session starts (embedded default, `opspilot demo` data,
the alert scheduler ticking every 2 s so the demo's rule opens its incident quickly).

Never `playwright install`: the system Chromium is the browser. Without it (or without
Playwright) the tests skip, unless CI or OPSPILOT_REQUIRE_SERVICES=1 is set: then they fail.
Each test saves screenshots under build/browser-tests/ (OPSPILOT_BROWSER_OUTPUT) and fails
on any console error or uncaught exception of the page.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

CHROMIUM = os.environ.get("OPSPILOT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
ROOT = Path(__file__).resolve().parents[2]
OUTPUT = Path(os.environ.get("OPSPILOT_BROWSER_OUTPUT", ROOT / "build" / "browser-tests"))
PORTS = range(22110, 22200)  # this suite's share of the project's port plan
BIN = Path(sys.executable).parent / "opspilot"
REQUIRED = bool(os.environ.get("CI") or os.environ.get("OPSPILOT_REQUIRE_SERVICES"))


def _missing(reason: str) -> None:
    if REQUIRED:
        pytest.fail(reason)
    pytest.skip(reason)


def _port() -> int:
    for port in PORTS:
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port))
            return port
    raise RuntimeError(f"no free port in {PORTS}")


@attrs.frozen
class Demo:
    base: str
    project_id: str
    project_name: str
    token: str


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSPILOT_")}
    return env | {"OPSPILOT_ALERT_INTERVAL_SECONDS": "2"}


@pytest.fixture(scope="session")
def demo() -> Iterator[Demo]:
    port = _port()
    base = f"http://127.0.0.1:{port}"
    log = (OUTPUT / "serve.log")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    for stale in OUTPUT.glob("*.png"):
        stale.unlink()
    with log.open("w") as out:
        proc = subprocess.Popen([str(BIN), "serve", "--port", str(port)], env=_clean_env(),
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120  # a loaded 2-core machine imports slowly
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"serve exited: {log.read_text()}")
                time.sleep(0.2)
        else:
            pytest.fail(f"serve did not start: {log.read_text()}")
        made = subprocess.run([str(BIN), "demo", "--server", base], env=_clean_env(),
                              capture_output=True, text=True, timeout=120, check=True)
        creds = json.loads(next(line for line in made.stdout.splitlines()
                                if line.startswith("{")))
        yield Demo(base, creds["project_id"], creds["name"], creds["token"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        _missing(f"no Chromium at {CHROMIUM} (scripts/test installs Debian's chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Page:
    """A tab on the explorer, with the console watched and screenshots named per test."""

    def __init__(self, page: Any, demo: Demo, name: str) -> None:
        self.page = page
        self.demo = demo
        self.name = name
        self.problems: list[str] = []
        self.shots = 0
        page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))

    def open(self, query: str = "") -> None:
        self.page.goto(f"{self.demo.base}/ui/{query}")

    def sign_in(self, query: str = "") -> None:
        """Opens the page (a deep link if `query`), then signs in with the keyboard only."""
        self.open(query)
        self.page.wait_for_selector("#token", state="visible")
        self.page.focus("#token")
        self.page.keyboard.type(self.demo.token)
        self.page.keyboard.press("Enter")
        self.page.wait_for_selector("#tabs", state="visible")

    def shot(self, label: str) -> Path:
        self.shots += 1
        path = OUTPUT / f"{self.name}-{self.shots:02d}-{label}.png"
        self.page.screenshot(path=str(path), full_page=False)
        return path

    def params(self) -> dict[str, list[str]]:
        from urllib.parse import parse_qs, urlsplit

        return parse_qs(urlsplit(self.page.url).query)


@pytest.fixture
def tab(browser: Any, demo: Demo, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = Page(context.new_page(), demo, request.node.name.removeprefix("test_"))
    page.page.set_default_timeout(20_000)
    try:
        yield page
    finally:
        with contextlib.suppress(Exception):
            page.shot("last")
        context.close()
    assert not page.problems, page.problems


def axe_source() -> str | None:
    """axe-core's axe.min.js as scripts/test fetched it from npm (`npm pack axe-core`)."""
    folder = ROOT / ".cache" / "npm"
    found = sorted(folder.glob("axe-core-*/package/axe.min.js")) if folder.exists() else []
    return found[-1].read_text() if found else None


@pytest.fixture(scope="session")
def axe() -> str:
    source = axe_source()
    if source is None:
        _missing("axe-core not fetched: scripts/test runs `npm pack axe-core` into .cache/npm")
    assert source is not None
    return source
