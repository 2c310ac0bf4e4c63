"""Reading a request body: after authentication, within the process's byte budget, inflated
here (never by aiohttp's parser) with a cap, within a time limit.

The server runs with `auto_decompress=False` (app.py `server_options`): aiohttp would
otherwise inflate a gzip body as it arrives, before any handler ran, and drain the rest of
it by inflating after an early 401 (1 MB of gzip is 1 GiB of work on the event loop).
Handlers call `read_body` only once the caller is authenticated, so an anonymous caller
never costs an inflation.
"""

from __future__ import annotations

import asyncio
import zlib

from aiohttp import web

from opspilot.domain.errors import UnsupportedMediaType, ValidationError
from opspilot.entrypoints.api.state import services

# Content-Encoding → zlib window bits. Brotli and zstd are refused (415), not decoded.
DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
PLAIN = ("", "identity")
HELD = web.RequestKey("budget_held", int)
INFLATE_IN_THREAD = 256 * 1024  # compressed bytes past which inflating leaves the event loop


async def read_body(request: web.Request) -> bytes:
    """The body, inflated if it is gzip or deflate (415 for any other Content-Encoding)."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in PLAIN and encoding not in DECODERS:
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none",
            {"field": "Content-Encoding"})
    raw = await read_raw_body(request)
    if encoding in PLAIN:
        return raw
    limit = services(request).max_body_bytes
    _hold(request, limit)  # the inflated body may reach the limit: reserve it first
    if len(raw) > INFLATE_IN_THREAD:
        return await asyncio.to_thread(inflate, raw, DECODERS[encoding], limit, encoding)
    return inflate(raw, DECODERS[encoding], limit, encoding)


async def read_raw_body(request: web.Request) -> bytes:
    """The body's bytes as sent (for a protocol that decodes its own, e.g. snappy), within
    the byte budget, the size limit and the body timeout."""
    svc = services(request)
    limit = svc.max_body_bytes
    declared = request.content_length
    if declared is not None and declared > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=declared)
    _hold(request, declared if declared is not None else limit)
    try:
        async with asyncio.timeout(svc.http.body_seconds):
            return await request.read()
    except TimeoutError:
        raise ValidationError(
            "body", f"not received within {svc.http.body_seconds:g} s") from None


def inflate(raw: bytes, wbits: int, limit: int, encoding: str) -> bytes:
    """The decoded body, never more than `limit` bytes of it: 413 past that (decoding
    stops there), ValidationError (400) when the bytes are not a whole stream of
    `encoding`."""
    decoder = zlib.decompressobj(wbits)
    try:
        body = decoder.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise ValidationError("body", f"not a valid {encoding} stream: {exc}") from None
    if len(body) > limit or decoder.unconsumed_tail:
        raise web.HTTPRequestEntityTooLarge(
            max_size=limit, actual_size=limit + 1,
            text=f"more than {limit} bytes once inflated")
    if not decoder.eof:
        raise ValidationError("body", f"the {encoding} stream is truncated")
    return body


def _hold(request: web.Request, size: int) -> None:
    """Reserve `size` more bytes for this request (released by `release_body`)."""
    request[HELD] = request.get(HELD, 0) + services(request).budget.take(size)


def release_body(request: web.Request) -> None:
    held = request.get(HELD, 0)
    if held:
        services(request).budget.give_back(held)
        request[HELD] = 0
