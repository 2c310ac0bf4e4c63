"""Reading a parsed PromQL expression: refusing what is outside the supported subset before any
data is read, and listing the selectors to fetch with the time span each one needs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import attrs
import promql_parser as pp

from opspilot.application.promql.values import unsupported
from opspilot.domain.errors import ValidationError
from opspilot.domain.labels import NAME_LABEL, LabelMatcher, MatchOp

LOOKBACK_MS = 5 * 60 * 1000  # Prometheus' default --query.lookback-delta

RANGE_FUNCTIONS = {
    "rate", "irate", "increase", "avg_over_time", "sum_over_time", "min_over_time",
    "max_over_time", "count_over_time", "last_over_time", "quantile_over_time",
}
INSTANT_FUNCTIONS = {
    "abs", "clamp", "clamp_min", "clamp_max", "round", "time", "vector", "scalar",
    "histogram_quantile",
}
AGGREGATIONS = {"sum", "avg", "min", "max", "count", "topk", "bottomk", "quantile"}
BINARY = {"+", "-", "*", "/", "%", "^", "==", "!=", ">", "<", ">=", "<="}

# The parser's enums are not hashable: they are told apart by their names.
_OPS = {"MatchOp.Equal": MatchOp.EQUAL, "MatchOp.NotEqual": MatchOp.NOT_EQUAL,
        "MatchOp.Re": MatchOp.REGEX, "MatchOp.NotRe": MatchOp.NOT_REGEX}


def parse(query: str) -> pp.Expr:
    if not query.strip():
        raise ValidationError("query", "an expression is required")
    try:
        return pp.parse(query)
    except (ValueError, TypeError) as exc:
        raise ValidationError("query", f"parse error: {exc}") from None


def millis_of(delta: timedelta | None) -> int:
    return 0 if delta is None else delta // timedelta(milliseconds=1)


@attrs.frozen
class SelectorKey:
    """One selector's matchers and the span its evaluation reads: the key under which its
    series are fetched once and found again while evaluating."""

    matchers: tuple[LabelMatcher, ...]
    start_ms: int
    end_ms: int


def matchers_of(selector: pp.VectorSelector) -> tuple[LabelMatcher, ...]:
    if selector.at is not None:
        raise unsupported("the @ modifier")
    if selector.matchers.or_matchers:
        raise unsupported("`or` inside a selector")
    found = [LabelMatcher(NAME_LABEL, MatchOp.EQUAL, selector.name)] if selector.name else []
    found += [LabelMatcher(m.name, _OPS[str(m.op)], m.value) for m in selector.matchers.matchers]
    return tuple(found)


def selector_key(selector: pp.VectorSelector, steps: Sequence[int], window_ms: int
                 ) -> SelectorKey:
    offset = millis_of(selector.offset)
    return SelectorKey(matchers_of(selector), steps[0] - offset - window_ms,
                       steps[-1] - offset)


def selectors(node: pp.Expr, steps: Sequence[int]) -> list[SelectorKey]:
    """Every selector of the expression, after checking that each node is supported."""
    found: list[SelectorKey] = []
    _walk(node, steps, found)
    return found


def _walk(node: pp.Expr, steps: Sequence[int], found: list[SelectorKey]) -> None:
    if isinstance(node, pp.VectorSelector):
        found.append(selector_key(node, steps, LOOKBACK_MS))
    elif isinstance(node, pp.MatrixSelector):
        found.append(selector_key(node.vector_selector, steps, millis_of(node.range)))
    elif isinstance(node, pp.NumberLiteral | pp.StringLiteral):
        return
    elif isinstance(node, pp.ParenExpr | pp.UnaryExpr):
        _walk(node.expr, steps, found)
    elif isinstance(node, pp.AggregateExpr):
        _check(str(node.op), AGGREGATIONS, "aggregation")
        if node.param is not None:
            _walk(node.param, steps, found)
        _walk(node.expr, steps, found)
    elif isinstance(node, pp.BinaryExpr):
        _check(str(node.op), BINARY, "binary operator")
        _walk(node.lhs, steps, found)
        _walk(node.rhs, steps, found)
    elif isinstance(node, pp.Call):
        _check_call(node)
        for arg in node.args:
            _walk(arg, steps, found)
    elif isinstance(node, pp.SubqueryExpr):
        raise unsupported("a subquery")
    else:
        raise unsupported(f"the expression {node}")


def _check(name: str, allowed: set[str], kind: str) -> None:
    if name not in allowed:
        raise unsupported(f"{kind} `{name}`")


def _check_call(node: pp.Call) -> None:
    name = node.func.name
    _check(name, RANGE_FUNCTIONS | INSTANT_FUNCTIONS, "function")
    if name in RANGE_FUNCTIONS and not isinstance(node.args[-1], pp.MatrixSelector):
        raise unsupported(f"function `{name}` over a subquery")
