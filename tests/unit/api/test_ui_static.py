"""The explorer page: served from the package at /ui/, / redirects there, only the shipped
files answer, and the vendored uPlot is the release file its record names."""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from typing import Any

import pytest

from opspilot.entrypoints.api.routes_ui import load_assets

STATIC = resources.files("opspilot.entrypoints.ui").joinpath("static")


async def test_root_and_ui_redirect_to_the_page(api: Any) -> None:
    for path in ("/", "/ui"):
        response = await api.get(path, allow_redirects=False)
        assert response.status == 302 and response.headers["Location"] == "/ui/"


async def test_the_page_and_its_assets(api: Any) -> None:
    page = await api.get("/ui/?view=logs&q=timeout")
    assert page.status == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    html = await page.text()
    referenced = re.findall(r'(?:src|href)="([^"?#:]+)"', html)
    assert "app.js" in referenced and "vendor/uPlot.iife.min.js" in referenced
    for name in referenced:
        asset = await api.get(f"/ui/{name}")
        assert asset.status == 200, name
        assert asset.headers["X-Content-Type-Options"] == "nosniff"
    js = await api.get("/ui/metrics.js")
    assert js.headers["Content-Type"].startswith("text/javascript")
    css = await api.get("/ui/app.css")
    assert css.headers["Content-Type"].startswith("text/css")


async def test_every_module_import_resolves_to_a_shipped_file(api: Any) -> None:
    assets = load_assets()
    for name, asset in assets.items():
        if name.endswith(".js") and not name.startswith("vendor/"):
            for imported in re.findall(rb'from "\./([^"]+)"', asset.body):
                assert imported.decode() in assets, (name, imported)


async def test_etag_revalidation(api: Any) -> None:
    first = await api.get("/ui/app.js")
    again = await api.get("/ui/app.js", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status == 304


@pytest.mark.parametrize("path", ["/ui/nothing.js", "/ui/../pyproject.toml",
                                  "/ui/%2e%2e/settings.py", "/ui/vendor/", "/ui/vendor"])
async def test_only_shipped_files_answer(api: Any, path: str) -> None:
    response = await api.get(path)
    assert response.status == 404
    assert (await response.json())["error"]["code"]


def test_vendored_uplot_matches_its_record() -> None:
    record = STATIC.joinpath("vendor/VENDORED.txt").read_text()
    for name, wanted in re.findall(r"^\s+(\S+)\s+sha256 ([0-9a-f]{64})", record, re.M):
        body = STATIC.joinpath("vendor", name).read_bytes()
        assert hashlib.sha256(body).hexdigest() == wanted, name
    assert STATIC.joinpath("vendor/uPlot.iife.min.js").read_text().startswith(
        "/*! https://github.com/leeoniya/uPlot (v1.6.32) */")
    assert "MIT License" in STATIC.joinpath("vendor/uPlot.LICENSE.txt").read_text()
