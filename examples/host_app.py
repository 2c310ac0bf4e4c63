"""A host aiohttp service that mounts OpsPilot's API under /observability.

The host keeps its own routes and middlewares; OpsPilot's routes (ingest, queries, rules,
/healthz, /metrics, /api/openapi.json) answer under the prefix with their own error
handling. OpsPilot opens with the application and closes with it (cleanup_ctx).

Run: python examples/host_app.py --port 8000
     curl localhost:8000/hello
     curl localhost:8000/observability/healthz
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

import opspilot

OPSPILOT = web.AppKey("opspilot", opspilot.OpsPilot)


@web.middleware
async def stamp(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The host's own middleware: it sees every request, OpsPilot's included."""
    response = await handler(request)
    response.headers["X-Served-By"] = "host-app"
    return response


async def hello(request: web.Request) -> web.Response:
    return web.json_response({"hello": "from the host", "opspilot": opspilot.__version__})


async def create_app() -> web.Application:
    ops = await opspilot.OpsPilot().start()  # OPSPILOT_* settings; none set: in memory
    app = web.Application(middlewares=[stamp])
    app[OPSPILOT] = ops
    app.router.add_get("/hello", hello)
    app.add_subapp("/observability", opspilot.web_app(ops))

    async def close_opspilot(app: web.Application) -> AsyncIterator[None]:
        yield
        await app[OPSPILOT].close()

    app.cleanup_ctx.append(close_opspilot)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    web.run_app(create_app(), host=args.host, port=args.port)
