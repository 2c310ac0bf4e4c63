"""The subset of OpenSearch `simple_query_string` the viewer documents, as a pure matcher.

Used by the in-memory log store so it answers as the OpenSearch adapter does: terms are
lower-cased word tokens (the standard analyzer, approximately), all terms must match
(default operator AND), `"quoted words"` match as a phrase, `-term` excludes, `term*` is a
prefix. Anything else in the text is treated as plain words, never as syntax.
"""

from __future__ import annotations

import re

import attrs

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
_PART = re.compile(r'(-?)"([^"]*)"|(-?)(\S+)')


def tokenize(text: str) -> list[str]:
    return [t.lower() for t in _TOKEN.findall(text)]


@attrs.frozen
class Clause:
    tokens: tuple[str, ...]
    negated: bool = False
    prefix: bool = False
    phrase: bool = False


def parse(text: str) -> list[Clause]:
    clauses = []
    for match in _PART.finditer(text):
        if match.group(2) is not None:
            tokens = tuple(tokenize(match.group(2)))
            if tokens:
                clauses.append(Clause(tokens, negated=bool(match.group(1)), phrase=True))
            continue
        word = match.group(4)
        prefix = word.endswith("*")
        for token in tokenize(word):
            clauses.append(Clause((token,), negated=bool(match.group(3)), prefix=prefix))
    return clauses


def matches(clauses: list[Clause], message: str) -> bool:
    tokens = tokenize(message)
    return all(_clause_holds(c, tokens) != c.negated for c in clauses)


def _clause_holds(clause: Clause, tokens: list[str]) -> bool:
    if clause.phrase:
        width = len(clause.tokens)
        return any(tuple(tokens[i : i + width]) == clause.tokens for i in range(len(tokens)))
    word = clause.tokens[0]
    if clause.prefix:
        return any(t.startswith(word) for t in tokens)
    return word in tokens
