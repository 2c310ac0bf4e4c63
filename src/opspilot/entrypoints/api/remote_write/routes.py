"""POST /api/v1/write: Prometheus remote-write 1.0 (snappy-compressed protobuf).

Answers as Prometheus' own receiver does, so that its retry logic does the right thing:
204 when everything was kept; 400 (not retried) for an undecodable body or refused
samples, naming the first field and counting the rest, the good samples of the request
being kept; 415 for another encoding; 413 past the size limit; 429/503 with Retry-After
(retried) when the queue or a backing service cannot take the batch now.
"""

from __future__ import annotations

import cramjam
from aiohttp import web
from google.protobuf.message import DecodeError

from opspilot.domain.errors import LimitExceeded, UnsupportedMediaType, ValidationError
from opspilot.entrypoints.api.body import read_raw_body
from opspilot.entrypoints.api.guards import ingest_identity
from opspilot.entrypoints.api.remote_write.mapping import map_write
from opspilot.entrypoints.api.remote_write.remote_write_pb2 import WriteRequest
from opspilot.entrypoints.api.state import services

PROTOBUF = "application/x-protobuf"


async def remote_write(request: web.Request) -> web.Response:
    identity = await ingest_identity(request, bearer_key=True)
    svc = services(request)
    write = await _read(request, svc.max_body_bytes)
    mapped = map_write(write, svc.ingest.time_check("metrics"))
    if mapped.records or mapped.metadata:  # Prometheus sends metadata in requests of its own
        accepted = await svc.ingest.accept_metrics(identity, mapped.records, mapped.metadata)
        svc.telemetry.accepted("metrics", identity.project_id, accepted.accepted)
    if mapped.rejected:
        field, message = mapped.problems[0]
        raise ValidationError(field, message, rejected=mapped.rejected,
                              accepted=len(mapped.records), summary=mapped.message())
    return web.Response(status=204)


async def _read(request: web.Request, max_bytes: int) -> WriteRequest:
    if request.content_type != PROTOBUF:
        raise UnsupportedMediaType(f"Content-Type: {request.content_type or 'none'}:"
                                   f" remote-write sends {PROTOBUF}", {"field": "Content-Type"})
    if request.headers.get("Content-Encoding", "").lower() != "snappy":
        raise UnsupportedMediaType("Content-Encoding: remote-write bodies are snappy-compressed"
                                   " (Content-Encoding: snappy)", {"field": "Content-Encoding"})
    compressed = await read_raw_body(request)
    try:
        size = cramjam.snappy.decompress_raw_len(compressed)
        if size > max_bytes:
            raise LimitExceeded("body", f"{size} bytes uncompressed; at most {max_bytes}")
        raw = bytes(cramjam.snappy.decompress_raw(compressed))
    except cramjam.DecompressionError as exc:
        raise ValidationError("body", f"not snappy (block format): {exc}") from None
    write = WriteRequest()
    try:
        write.ParseFromString(raw)
    except DecodeError as exc:
        raise ValidationError("body", f"not a remote-write WriteRequest: {exc}") from None
    return write


def register(app: web.Application) -> None:
    app.router.add_post("/api/v1/write", remote_write)
