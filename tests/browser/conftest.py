"""Browser tests: Debian's Chromium (/usr/bin/chromium) driven by Playwright for Python,
against an `opspilot serve` this session starts (embedded default, or the real services:
tests/browser/backends.py), with `opspilot demo` data, a second rule notifying a webhook
receiver of this session's own, and the alert scheduler ticking every 2 s so that both
rules open their incidents quickly.

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
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import attrs
import pytest

from tests.browser import backends
from tests.services import unavailable

CHROMIUM = os.environ.get("OPSPILOT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
ROOT = Path(__file__).resolve().parents[2]
OUTPUT = Path(os.environ.get("OPSPILOT_BROWSER_OUTPUT", ROOT / "build" / "browser-tests"))
PORTS = range(22110, 22200)  # this suite's share of the project's port plan
BIN = Path(sys.executable).parent / "opspilot"


def _missing(reason: str) -> NoReturn:
    unavailable("the browser suite's tools", reason)


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
    admin_token: str


class _Receiver(BaseHTTPRequestHandler):
    """The webhook channel's target: answers 200 and counts what it got."""

    received: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.received.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture(scope="session")
def receiver() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", _port()), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def _call(base: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="session")
def demo(receiver: str) -> Iterator[Demo]:
    port = _port()
    base = f"http://127.0.0.1:{port}"
    log = (OUTPUT / "serve.log")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    for stale in OUTPUT.glob("*.png"):
        stale.unlink()
    try:
        env = backends.serve_env()
    except RuntimeError as exc:
        _missing(str(exc))
    with log.open("w") as out:
        proc = subprocess.Popen([str(BIN), "serve", "--port", str(port)], env=env,
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
        made = subprocess.run([str(BIN), "demo", "--server", base], env=env,
                              capture_output=True, text=True, timeout=120, check=True)
        creds = json.loads(next(line for line in made.stdout.splitlines()
                                if line.startswith("{")))
        query = {"Authorization": f"Bearer {creds['token']}", "X-Project-ID": creds["project_id"]}
        hook = _call(base, "/api/channels", {"name": "on-call hook", "type": "webhook",
                                             "target": receiver}, query)
        _call(base, "/api/rules", {"name": "checkout errors above 5", "metric_name": "error_rate",
                                   "service_name": "checkout", "threshold": 5.0, "window": "5m",
                                   "channels": [hook["id"]]}, query)
        yield Demo(base, creds["project_id"], creds["name"], creds["token"],
                   env["OPSPILOT_ADMIN_TOKEN"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        backends.tear_down(env)


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
