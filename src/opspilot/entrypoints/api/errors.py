"""One middleware turns every failure into the standard error body.

`{"error": {"code", "message", "details"}}`, with `details.field` naming the input at fault.
Domain errors map to 4xx/503; pydantic errors to 400 naming the field; aiohttp's own HTTP
errors (413 body too large, 405, 404 route) keep their status; anything else is a 500 that
is logged with its traceback and shown without internals.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pydantic
from aiohttp import web

from opspilot.domain import errors, storable

log = logging.getLogger(__name__)

STATUS = {
    errors.ValidationError: 400,
    errors.Unauthenticated: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.QueryExecutionError: 422,
    errors.QueryTimeout: 503,
    errors.UnsupportedMediaType: 415,
    errors.RateLimited: 429,
    errors.ServiceUnavailable: 503,
}


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return web.Response(
        status=status, body=_dumps(body), content_type="application/json", headers=headers,
    )


def _dumps(body: dict[str, Any]) -> bytes:
    """The error body as JSON, whatever it quotes: the details may carry a caller's bytes
    (a header aiohttp decoded into lone surrogates, which orjson refuses to write) or an
    object nesting deeper than orjson writes. The answer must not fail on them."""
    try:
        return orjson.dumps(body, default=str)
    except (TypeError, orjson.JSONEncodeError):
        return orjson.dumps(_printable(body))


def _printable(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if depth > 8:
        return "…"
    if isinstance(value, dict):
        return {_printable(str(k)): _printable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_printable(v, depth + 1) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return _printable(str(value))


def _status_of(exc: errors.OpsPilotError) -> int:
    if isinstance(exc, errors.LimitExceeded) and exc.field == "body":
        return 413
    for kind in type(exc).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 500


def from_domain(exc: errors.OpsPilotError, headers: dict[str, str] | None = None) -> web.Response:
    headers = dict(headers or {})
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    return error_response(_status_of(exc), exc.code, exc.message, exc.details, headers)


def _problems(exc: pydantic.ValidationError, prefix: str = "") -> list[dict[str, Any]]:
    return [
        {"field": _field_name(prefix, e["loc"]), "message": _message(e), "type": e["type"]}
        for e in exc.errors(include_url=False, include_input=False)
    ][:20]


def validation_error(exc: pydantic.ValidationError) -> errors.ValidationError:
    """The same first problem (and list of problems) as `from_pydantic`, as the domain's
    error, for callers without HTTP (the library's ingest)."""
    problems = _problems(exc)
    first = problems[0] if problems else {"field": "body", "message": "invalid"}
    return errors.ValidationError(first["field"], first["message"], problems=problems)


def from_pydantic(exc: pydantic.ValidationError, prefix: str = "") -> web.Response:
    problems = _problems(exc, prefix)
    first = problems[0] if problems else {"field": prefix or "body", "message": "invalid"}
    return error_response(
        400, "invalid_input", f"{first['field']}: {first['message']}",
        {"field": first["field"], "problems": problems},
    )


def _message(error: Any) -> str:
    """pydantic's message, but said in the store's terms for text the stores cannot hold."""
    if error["type"] == "string_pattern_mismatch" and \
            error.get("ctx", {}).get("pattern") == storable.STORABLE_PATTERN:
        return storable.NUL_REASON
    if error["type"] == "string_pattern_mismatch" and \
            error.get("ctx", {}).get("pattern") == storable.PRINTABLE_PATTERN:
        return storable.CONTROL_REASON
    if error["type"] == "string_unicode":
        return storable.SURROGATE_REASON
    return str(error["msg"])


def _field_name(prefix: str, loc: tuple[Any, ...]) -> str:
    parts = [prefix] if prefix else []
    for piece in loc:
        if isinstance(piece, int) and parts:
            parts[-1] = f"{parts[-1]}[{piece}]"
        else:
            parts.append(str(piece))
    return ".".join(parts) or "body"


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except errors.OpsPilotError as exc:
        return from_domain(exc)
    except pydantic.ValidationError as exc:
        return from_pydantic(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            exc.status, "http_error"
        )
        # The input at fault: the body past the size limit, the path no route has, the method.
        field = {413: "body", 404: "path", 405: "method"}.get(exc.status)
        details = {"field": field} if field else {}
        # Keep aiohttp's headers (405's `Allow`), less those of the plain-text body replaced here.
        headers = {name: value for name, value in exc.headers.items()
                   if name.lower() not in ("content-type", "content-length")}
        return error_response(exc.status, code, exc.reason, details, headers)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error; it has been logged")
