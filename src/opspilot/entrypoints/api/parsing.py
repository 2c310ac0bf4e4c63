"""Turning requests into validated models and domain values.

A pydantic error propagates to the error middleware, which answers 400 naming the field.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, TypeVar

import orjson
import pydantic
from aiohttp import web

from opspilot.domain.errors import ValidationError
from opspilot.domain.timewindow import TimeRange
from opspilot.entrypoints.api.body import read_body

M = TypeVar("M", bound=pydantic.BaseModel)


async def json_body(request: web.Request, model: type[M]) -> M:
    raw = await read_body(request)
    if not raw:
        raise ValidationError("body", "a JSON body is required")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationError("body", f"not valid JSON: {exc}") from None
    return model.model_validate(doc)


def query_params(request: web.Request, model: type[M]) -> M:
    doc: dict[str, Any] = {}
    for key in request.query:
        values = request.query.getall(key)
        doc[key] = values[0] if len(values) == 1 else ",".join(values)
    return model.model_validate(doc)


def window_of(
    now: datetime, start: datetime | None, end: datetime | None, default_hours: float = 1.0
) -> TimeRange:
    """Missing bounds default to the hour before `end` (or before now)."""
    end = end or now
    start = start or end - timedelta(hours=default_hours)
    return TimeRange.checked(start, end)
