"""What the stores can hold, checked where text enters (ADR 0014).

PostgreSQL `text` and `jsonb` refuse U+0000 (NUL), and nothing that is not valid UTF-8 can be
sent to PostgreSQL or OpenSearch: a lone surrogate (U+D800-U+DFFF, which a Python `str` can
carry, e.g. from a header decoded with `surrogateescape`) has no UTF-8 form. OpenSearch
`keyword` fields refuse a term over 32,766 UTF-8 bytes; every keyword field the API writes has
a shorter documented length, so that limit never binds. A JSON value kept in `jsonb` and in
OpenSearch `_source` (a log's `context`) must in addition be one orjson can write back (at
most 254 levels deep) and have keys of bounded length.

A value that breaks one of these rules is refused at the API (400 naming the field) instead
of being accepted with a 202 and then refused by the store. NUL inside a log `message` is
refused the same way: storing it escaped would return a different message than was sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from opspilot.domain.errors import ValidationError

# One pattern for "storable text" that pydantic-core (Rust regex) and `re` both accept; a
# lone surrogate never reaches pydantic-core's regex (it refuses such a str as not Unicode).
STORABLE_PATTERN = r"^[^\x00]*$"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# Names (rules, channels, projects) also leave out control characters (C0, DEL and C1): a
# CR/LF in a rule's name ended up in e-mail headers and broke every mail for that rule.
PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"
CONTROL_REASON = "contains a control character (such as CR, LF or tab), which names may not"
NUL_REASON = "contains NUL (U+0000), which PostgreSQL text cannot store"
SURROGATE_REASON = "contains an unpaired surrogate, which is not valid Unicode text"
MAX_JSON_DEPTH = 32  # levels of objects/arrays in a log context (orjson writes at most 254)
MAX_KEY_CHARS = 256  # characters in a context key


def problem(value: str) -> str | None:
    """Why `value` cannot be stored as text, or None when it can."""
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    return NUL_REASON if found.group() == "\x00" else SURROGATE_REASON


def first_problem(texts: Iterable[str | None]) -> str | None:
    """The first reason one of `texts` cannot be stored (None values are fine)."""
    for value in texts:
        if value is not None and (reason := problem(value)) is not None:
            return reason
    return None


def check_text(value: str, field: str) -> str:
    """`value` when the stores can hold it; else ValidationError naming `field`."""
    reason = problem(value)
    if reason is not None:
        raise ValidationError(field, reason)
    return value


def check_json(value: Any, field: str, depth: int = 0) -> None:
    """A JSON value (as parsed) the stores can hold whole: storable strings and keys, keys
    of at most MAX_KEY_CHARS, at most MAX_JSON_DEPTH levels of nesting. The field named is
    the path to the first fault (`logs[2].context.user.name`)."""
    if isinstance(value, str):
        check_text(value, field)
    elif isinstance(value, Mapping):
        _check_nesting(depth, field)
        for key, item in value.items():
            _check_key(key, field)
            check_json(item, f"{field}.{key}", depth + 1)
    elif isinstance(value, list):
        _check_nesting(depth, field)
        for index, item in enumerate(value):
            check_json(item, f"{field}[{index}]", depth + 1)


def _check_nesting(depth: int, field: str) -> None:
    if depth >= MAX_JSON_DEPTH:
        raise ValidationError(field, f"nested more than {MAX_JSON_DEPTH} levels deep")


def _check_key(key: str, field: str) -> None:
    reason = problem(key)
    if reason is not None:
        raise ValidationError(field, f"a key {reason}")
    if len(key) > MAX_KEY_CHARS:
        raise ValidationError(field, f"a key is longer than {MAX_KEY_CHARS} characters")
