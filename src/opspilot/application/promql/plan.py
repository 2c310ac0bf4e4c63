"""Reading a parsed PromQL expression: refusing what is outside the supported subset before any
data is read, and listing the selectors to fetch with the time span each one needs."""

from __future__ import annotations

from datetime import timedelta

import attrs
import promql_parser as pp

from opspilot.application.promql.values import unsupported
from opspilot.domain.errors import ValidationError
from opspilot.domain.labels import NAME_LABEL, LabelMatcher, MatchOp
from opspilot.domain.step_windows import LAST_SAMPLE, StepWindows

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
class Grid:
    """The evaluation steps first_ms + i·step_ms (i < count; an instant query is one step)
    and the lookback delta of instant selectors."""

    first_ms: int
    step_ms: int
    count: int
    lookback_ms: int = LOOKBACK_MS

    @property
    def steps(self) -> list[int]:
        return list(range(self.first_ms, self.first_ms + self.count * self.step_ms,
                          self.step_ms))


@attrs.frozen
class SelectorKey:
    """A matrix selector read as raw samples (a range vector answered as it is): its matchers
    and the span it reads."""

    matchers: tuple[LabelMatcher, ...]
    start_ms: int
    end_ms: int


@attrs.frozen
class StepKey:
    """A selector read through a step function: an instant selector (its lookback), or a
    range function over a matrix selector. The store computes its windows."""

    matchers: tuple[LabelMatcher, ...]
    windows: StepWindows


Key = SelectorKey | StepKey


def matchers_of(selector: pp.VectorSelector) -> tuple[LabelMatcher, ...]:
    if selector.at is not None:
        raise unsupported("the @ modifier")
    if selector.matchers.or_matchers:
        raise unsupported("`or` inside a selector")
    found = [LabelMatcher(NAME_LABEL, MatchOp.EQUAL, selector.name)] if selector.name else []
    found += [LabelMatcher(m.name, _OPS[str(m.op)], m.value) for m in selector.matchers.matchers]
    return tuple(found)


def raw_key(node: pp.MatrixSelector, grid: Grid) -> SelectorKey:
    selector = node.vector_selector
    end = grid.steps[-1] - millis_of(selector.offset)
    return SelectorKey(matchers_of(selector), grid.first_ms - millis_of(selector.offset)
                       - millis_of(node.range), end)


def instant_key(selector: pp.VectorSelector, grid: Grid) -> StepKey:
    windows = StepWindows(LAST_SAMPLE, grid.first_ms, grid.step_ms, grid.count,
                          grid.lookback_ms, millis_of(selector.offset))
    return StepKey(matchers_of(selector), windows)


def function_key(call: pp.Call, grid: Grid) -> StepKey:
    """The step function a range-function call asks for; its matrix selector is its last
    argument, quantile_over_time's φ its first."""
    name = call.func.name
    matrix = call.args[-1]
    if not isinstance(matrix, pp.MatrixSelector):
        raise unsupported(f"function `{name}` over a subquery")
    params: tuple[float, ...] = ()
    if name == "quantile_over_time":
        params = (_constant(call.args[0]),) * grid.count
    selector = matrix.vector_selector
    windows = StepWindows(name, grid.first_ms, grid.step_ms, grid.count,
                          millis_of(matrix.range), millis_of(selector.offset), params)
    return StepKey(matchers_of(selector), windows)


def _constant(node: pp.Expr) -> float:
    if isinstance(node, pp.NumberLiteral):
        return float(node.val)
    if isinstance(node, pp.ParenExpr):
        return _constant(node.expr)
    if isinstance(node, pp.UnaryExpr):
        return -_constant(node.expr)
    raise unsupported("quantile_over_time with a φ that is not a number")


def keys(node: pp.Expr, grid: Grid) -> list[Key]:
    """What the expression reads, after checking that each node is supported."""
    found: list[Key] = []
    _walk(node, grid, found)
    return found


def _walk(node: pp.Expr, grid: Grid, found: list[Key]) -> None:
    if isinstance(node, pp.VectorSelector):
        found.append(instant_key(node, grid))
    elif isinstance(node, pp.MatrixSelector):
        found.append(raw_key(node, grid))
    elif isinstance(node, pp.NumberLiteral | pp.StringLiteral):
        return
    elif isinstance(node, pp.ParenExpr | pp.UnaryExpr):
        _walk(node.expr, grid, found)
    elif isinstance(node, pp.AggregateExpr):
        _check(str(node.op), AGGREGATIONS, "aggregation")
        if node.param is not None:
            _walk(node.param, grid, found)
        _walk(node.expr, grid, found)
    elif isinstance(node, pp.BinaryExpr):
        _check(str(node.op), BINARY, "binary operator")
        _walk(node.lhs, grid, found)
        _walk(node.rhs, grid, found)
    elif isinstance(node, pp.Call):
        _check(node.func.name, RANGE_FUNCTIONS | INSTANT_FUNCTIONS, "function")
        if node.func.name in RANGE_FUNCTIONS:
            found.append(function_key(node, grid))
            return
        for arg in node.args:
            _walk(arg, grid, found)
    elif isinstance(node, pp.SubqueryExpr):
        raise unsupported("a subquery")
    else:
        raise unsupported(f"the expression {node}")


def _check(name: str, allowed: set[str], kind: str) -> None:
    if name not in allowed:
        raise unsupported(f"{kind} `{name}`")
