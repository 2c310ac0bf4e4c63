"""OTLP values as OpsPilot values: attributes as tags or JSON, nanoseconds as datetimes,
and the per-record checks JSON ingest makes with pydantic (same limits, same messages)."""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from opspilot.domain import storable
from opspilot.domain.errors import ValidationError
from opspilot.domain.metrics import MAX_ABS_VALUE, MAX_TAG_LENGTH, MAX_TAGS, NAME_PATTERN

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_SERVICE_LENGTH = 100
MAX_TAG_KEY_LENGTH = 100


class Refused(Exception):
    """One record cannot be kept: `field` is relative to the record (e.g. `attributes`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def json_value(value: Any) -> Any:
    """An AnyValue as JSON: scalars as themselves, bytes as base64, arrays and kvlists nested."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "array_value":
        return [json_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: json_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return None


def tag_text(value: Any) -> str:
    """An AnyValue as a tag value: a string as given, other scalars as text, the rest as JSON."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return str(value.string_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return go_float(value.double_value)
    return orjson.dumps(json_value(value)).decode()


def go_float(number: float) -> str:
    """A float as Go's strconv.FormatFloat(f, 'g', -1, 64) writes it, as Prometheus writes
    `le` and `quantile` labels: 0.005, 1, 2.5, 100000, 1e+06, +Inf."""
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    if math.isnan(number):
        return "NaN"
    if number == 0:
        return "-0" if math.copysign(1.0, number) < 0 else "0"
    # repr is the shortest round-tripping decimal, as Go's shortest formatting is.
    sign, digits, exponent = Decimal(repr(number)).normalize().as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits))
    power = len(text) + exponent - 1
    prefix = "-" if sign else ""
    if power < -4 or power >= 6:  # Go: %e when the exponent is < -4 or >= 6 (shortest)
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{prefix}{mantissa}e{'+' if power >= 0 else '-'}{abs(power):02d}"
    return prefix + format(Decimal(text).scaleb(exponent), "f")


def timestamp(nanos: int, cache: dict[int, datetime]) -> datetime:
    """Nanoseconds since the epoch (exactly, to the microsecond a datetime holds); an
    export repeats a handful of timestamps, so callers share a cache per request."""
    found = cache.get(nanos)
    if found is None:
        found = cache[nanos] = as_datetime(nanos)
    return found


def as_datetime(nanos: int) -> datetime:
    """Exact to the microsecond: a float of whole microseconds since the epoch is within a
    quarter microsecond of them until the year 2255, and fromtimestamp rounds to the
    nearest; later instants go the slower exact way."""
    if nanos < 8_000_000_000_000_000_000:
        return datetime.fromtimestamp((nanos // 1000) / 1e6, UTC)
    return EPOCH + timedelta(microseconds=nanos // 1000)


def service_of(attributes: Iterable[Any]) -> str | None:
    for kv in attributes:
        if kv.key == "service.name":
            name = tag_text(kv.value)
            if not name:
                return None
            check_text(name, "resource.attributes.service.name")
            if len(name) > MAX_SERVICE_LENGTH:
                raise Refused("resource.attributes.service.name",
                              f"at most {MAX_SERVICE_LENGTH} characters")
            return name
    return None


def check_text(text: str, field: str) -> None:
    """The stores' rule for text (domain/storable.py), as a per-record refusal."""
    reason = storable.problem(text)
    if reason is not None:
        raise Refused(field, reason)


def check_name(name: str, field: str = "name") -> str:
    if not NAME_PATTERN.match(name):
        raise Refused(field, f"{name[:120]!r}: 1-100 characters: letters, digits, '_', '.',"
                             " ':', '-', starting with a letter or '_'")
    return name


def check_value(value: float, field: str) -> float:
    if not (math.isfinite(value) and abs(value) <= MAX_ABS_VALUE):
        raise Refused(field, f"must be a finite number within ±{MAX_ABS_VALUE:g}")
    return value


def tags_of(attributes: Any, extra: int = 0, field: str = "attributes") -> dict[str, str]:
    """Attributes as tags, within JSON ingest's limits (`extra` slots kept for `le` etc.)."""
    if len(attributes) + extra > MAX_TAGS:
        raise Refused(field, f"at most {MAX_TAGS} tags ({len(attributes) + extra} given)")
    tags = {}
    for kv in attributes:
        value = kv.value
        # String attributes are nearly all of them: a non-empty string_value is one, and
        # only an empty one needs the oneof asked (an int attribute reads as "" too).
        text = value.string_value
        if not text and not value.HasField("string_value"):
            text = tag_text(value)
        key = kv.key
        if (len(key) > MAX_TAG_KEY_LENGTH or len(text) > MAX_TAG_LENGTH or not key
                or "\x00" in key or "\x00" in text):  # (protobuf strings are valid UTF-8)
            return check_tags({k.key: tag_text(k.value) for k in attributes}, field)
        tags[key] = text
    return tags


def check_tags(tags: dict[str, str], field: str) -> dict[str, str]:
    """JSON ingest's tag limits: at most MAX_TAGS, keys 1-100 and values ≤200 characters;
    and no NUL characters."""
    if len(tags) > MAX_TAGS:
        raise Refused(field, f"at most {MAX_TAGS} tags ({len(tags)} given)")
    for key, text in tags.items():
        if not key or len(key) > MAX_TAG_KEY_LENGTH or len(text) > MAX_TAG_LENGTH:
            raise Refused(f"{field}.{key[:100]}",
                          f"tag keys 1-{MAX_TAG_KEY_LENGTH} and values ≤{MAX_TAG_LENGTH} characters")
        reason = storable.first_problem((key, text))
        if reason is not None:
            raise Refused(f"{field}.{key[:100]}", reason)
    return tags


def check_json(value: Any, field: str) -> None:
    """The stores' rule for a JSON value (domain/storable.py), as a per-record refusal."""
    try:
        storable.check_json(value, field)
    except ValidationError as exc:
        raise Refused(exc.field, exc.message.removeprefix(f"{exc.field}: ")) from None
