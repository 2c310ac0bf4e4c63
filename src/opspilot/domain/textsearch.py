"""The subset of OpenSearch `simple_query_string` the viewer documents, as a pure matcher.

The OpenSearch adapter sends the user's text as `simple_query_string` on `message`
(standard analyzer) with `default_operator: and`, `flags: AND|NOT|PHRASE|PREFIX|WHITESPACE`
and `analyze_wildcard: true`. The in-memory log store uses this module to answer the same:

- Words are split on spaces, tabs and line breaks; every word must match (AND). `+` is the
  explicit AND and also separates words.
- A word is analysed into tokens like the standard analyzer (Unicode word boundaries,
  lower-cased): `user_id`, `db.example.com`, `10.0.0.7`, `3.14`, `1,000`, `don't` and
  `foo:bar` stay one token; `worker-3`, `a.1`, `12:30` and `/api/orders` split. A word
  that yields several tokens matches when all of them occur (not necessarily adjacent).
- `"quoted words"` match as a phrase (consecutive tokens). A quote without its closing
  quote is ignored.
- `-` before a word or phrase excludes it (`-a-b` excludes records holding both a and b);
  a word ending in `*` is a prefix on its last token (`foo-ba*` = foo AND ba*). `-` or `*`
  elsewhere, and `|`, `(`, `)`, `~`, `\\`, `:` are plain characters, never syntax.
- Text with no token at all (punctuation only) filters nothing; but a prefix of no token
  (`!*`) matches nothing, and a run of `-` negates only when odd and touching its word.

The tokenizer follows Unicode word boundaries (UAX #29) as Lucene's standard tokenizer
does: letters and digits joined by `_`; `.`, `'`, `’`, `:` between letters and `.`, `,`,
`;`, `'` between digits kept inside a token; marks and format characters extending the
character before them; each CJK ideograph, hiragana character, emoji (with its modifiers)
and flag a token of its own; katakana runs apart from the letters around them; tokens over
255 characters cut into pieces; `½`-like numeric symbols dropped. Checked against the real
analyzer: the same tokens for 3,200 LogHub lines and the edge cases above, the same
results for 2,700 generated queries (tests/contract/test_log_store.py keeps a smaller
version of both checks). Where it must still differ, and why that is accepted:

- rare Unicode cases a regex over the Basic Multilingual Plane cannot see: marks outside
  it, a mark directly after `:`/`.` inside a word, `_` joining katakana to letters;
- lower-casing is per character as in Java (`ΣΑΣ` → `σασ`, `İ` → `i`), which covers the
  letters we know of but is not Java's table;
- there is no relevance: both stores order by (timestamp, id), so it never shows.
"""

from __future__ import annotations

import re
import unicodedata

import attrs

MAX_TOKEN_LENGTH = 255  # the standard tokenizer splits longer tokens into pieces


def _class_of(categories: tuple[str, ...], exclude: str = "") -> str:
    """A regex class body of the Basic Multilingual Plane characters in `categories`."""
    spans: list[str] = []
    start = None
    for point in range(0x10001):
        char = chr(point) if point < 0x10000 else ""
        inside = bool(char) and char not in exclude and \
            unicodedata.category(char).startswith(categories)
        if inside and start is None:
            start = point
        elif not inside and start is not None:
            spans.append(re.escape(chr(start)) + "-" + re.escape(chr(point - 1)))
            start = None
    return "".join(spans)


# Marks and format characters extend the character before them (UAX #29 WB4).
_EXTEND = _class_of(("M", "Cf"), exclude="\u200b\u200c") + "\U000e0100-\U000e01ef"
_OTHER_NUMBER = _class_of(("No",))  # ½, ²: dropped by the standard tokenizer
# Each ideograph and hiragana character is a token of its own; emoji likewise; katakana
# runs are tokens that do not join the letters around them.
_IDEOGRAPHS = "\u3040-\u309f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_KATAKANA = "\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9f"
_EMOJI = "\U0001f000-\U0001faff\u2600-\u27bf"
_APART = _IDEOGRAPHS + _KATAKANA + _EMOJI + _OTHER_NUMBER
_LETTER = rf"[^\W\d_{_APART}]"
_WORD_CHAR = rf"[^\W{_APART}]"  # letters, digits and `_`
_WORD = rf"{_WORD_CHAR}(?:{_WORD_CHAR}|[{_EXTEND}])*"
_TOKEN = re.compile(
    rf"[\U0001f1e6-\U0001f1ff]{{2}}"  # a flag: two regional indicators
    rf"|[{_EMOJI}](?:[{_EXTEND}\U0001f3fb-\U0001f3ff]|\u200d[{_EMOJI}])*"
    rf"|[{_IDEOGRAPHS}][{_EXTEND}]*"
    rf"|[{_KATAKANA}](?:[{_KATAKANA}_]|[{_EXTEND}])*"
    rf"|{_WORD}(?:(?:(?<=[^\W\d_{_APART}]|[{_EXTEND}])[:.'’·](?={_LETTER})"
    rf"|(?<=\d)[.,;'’](?=\d)){_WORD})*"
)
_NO_TOKEN = re.compile(rf"[_{_EXTEND}]+")  # `_` and marks alone make no token
_WHITESPACE = " \t\n\r"
_WORD_END = _WHITESPACE + '"+'


def tokenize(text: str) -> list[str]:
    tokens = []
    for match in _TOKEN.finditer(text):
        token = match.group()
        if not _NO_TOKEN.fullmatch(token):
            token = "".join("i" if c == "İ" else c.lower() for c in token)
            tokens += [token[i : i + MAX_TOKEN_LENGTH]
                       for i in range(0, len(token), MAX_TOKEN_LENGTH)]
    return tokens


@attrs.frozen
class Clause:
    tokens: tuple[str, ...]
    negated: bool = False
    prefix: bool = False  # the last token is a prefix
    phrase: bool = False


def parse(text: str) -> list[Clause]:
    """Clauses in the order `simple_query_string` reads them (Lucene's SimpleQueryParser
    with the flags above); a run of `-` negates when it is odd and touches the word."""
    clauses: list[Clause] = []
    at, negations = 0, 0
    while at < len(text):
        char = text[at]
        if char == "-":
            negations += 1
            at += 1
            continue
        if char == '"':
            at = _phrase(text, at, negations % 2 == 1, clauses)
        elif char in _WHITESPACE or char == "+":
            at += 1
        else:
            at = _word(text, at, negations % 2 == 1, clauses)
        negations = 0
    return clauses


def _phrase(text: str, at: int, negated: bool, clauses: list[Clause]) -> int:
    end = text.find('"', at + 1)
    if end == -1:
        return at + 1  # an unmatched quote is ignored
    tokens = tuple(tokenize(text[at + 1 : end]))
    if tokens:
        clauses.append(Clause(tokens, negated=negated, phrase=True))
    return end + 1


def _word(text: str, at: int, negated: bool, clauses: list[Clause]) -> int:
    end = at
    while end < len(text) and text[end] not in _WORD_END:
        end += 1
    word = text[at:end]
    prefix = len(word) > 1 and word.endswith("*")
    tokens = tuple(tokenize(word[:-1] if prefix else word))
    if tokens or prefix:  # a prefix of no word (`!*`) matches nothing, as in OpenSearch
        clauses.append(Clause(tokens, negated=negated, prefix=prefix))
    return end


def matches(clauses: list[Clause], message: str) -> bool:
    tokens = tokenize(message)
    return all(_clause_holds(c, tokens) != c.negated for c in clauses)


def _clause_holds(clause: Clause, tokens: list[str]) -> bool:
    if clause.phrase:
        width = len(clause.tokens)
        return any(tuple(tokens[i : i + width]) == clause.tokens for i in range(len(tokens)))
    if not clause.tokens:
        return False
    *whole, last = clause.tokens
    found = any(t.startswith(last) for t in tokens) if clause.prefix else last in tokens
    return found and all(word in tokens for word in whole)
