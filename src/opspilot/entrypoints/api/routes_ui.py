"""The explorer page: `/ui/` serves the static single-page app shipped in the package
(`opspilot/entrypoints/ui/static`), and `/` redirects there.

The files are read once at start-up into memory: a request can only name a file that was
there (no path from the URL ever reaches the file system), and each answer carries a strong
ETag. The page keeps all its state in the URL's query string, so `/ui/` is its one document.
"""

from __future__ import annotations

import hashlib
import mimetypes
from importlib import resources

import attrs
from aiohttp import web

from opspilot.entrypoints.api.state import mount_prefix

STATIC_PACKAGE = "opspilot.entrypoints.ui"
INDEX = "index.html"
# The page talks to its own origin only; uPlot sets inline styles, hence 'unsafe-inline'
# for styles (never for scripts).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "form-action 'none'")
TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
         ".html": "text/html", ".svg": "image/svg+xml", ".png": "image/png",
         ".txt": "text/plain", ".json": "application/json"}


@attrs.frozen
class Asset:
    body: bytes
    content_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every file under the static directory, by its path relative to it."""
    root = resources.files(STATIC_PACKAGE).joinpath("static")
    assets: dict[str, Asset] = {}
    pending = [(root, "")]
    while pending:
        folder, prefix = pending.pop()
        for entry in folder.iterdir():
            name = f"{prefix}{entry.name}"
            if entry.is_dir():
                pending.append((entry, f"{name}/"))
                continue
            body = entry.read_bytes()
            suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
            kind = TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
            assets[name] = Asset(body, kind, f'"{hashlib.sha256(body).hexdigest()[:32]}"')
    return assets


def _answer(request: web.Request, asset: Asset, cache: str) -> web.Response:
    headers = {"ETag": asset.etag, "Cache-Control": cache, "X-Content-Type-Options": "nosniff",
               "Referrer-Policy": "no-referrer"}
    if asset.content_type == "text/html":
        headers |= {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY"}
    if request.headers.get("If-None-Match") == asset.etag:
        return web.Response(status=304, headers=headers)
    charset = "utf-8" if asset.content_type.startswith(("text/", "image/svg")) else None
    return web.Response(body=asset.body, content_type=asset.content_type, charset=charset,
                        headers=headers)


def ui_routes(assets: dict[str, Asset]) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    @routes.get("/")
    @routes.get("/ui")
    async def to_ui(request: web.Request) -> web.Response:
        raise web.HTTPFound(mount_prefix(request.app) + "/ui/")

    @routes.get("/ui/")
    async def index(request: web.Request) -> web.Response:
        # revalidated each time: a new release's page must load its new assets
        return _answer(request, assets[INDEX], "no-cache")

    @routes.get("/ui/{name:.+}")
    async def asset(request: web.Request) -> web.Response:
        found = assets.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        return _answer(request, found, "no-cache")

    return routes


def register(app: web.Application) -> None:
    app.router.add_routes(ui_routes(load_assets()))
