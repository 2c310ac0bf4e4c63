"""Evaluating a parsed PromQL expression over fetched series, at every step at once.

Values are held column-wise (values.py): each node turns its children's columns into its own,
so a range query is one pass over the tree, not one per step. The semantics are Prometheus
2's (promql/engine.go): inclusive lookback and range windows, Go float arithmetic, metric
names dropped where Prometheus drops them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import promql_parser as pp

from opspilot.application.promql import kernels
from opspilot.application.promql.plan import (
    RANGE_FUNCTIONS,
    Grid,
    Key,
    function_key,
    instant_key,
    millis_of,
    raw_key,
)
from opspilot.application.promql.values import (
    RangeArg,
    Row,
    Scalar,
    StringValue,
    Value,
    Vector,
    merged_rows,
    unsupported,
    without_name,
)
from opspilot.domain.errors import QueryExecutionError, ValidationError
from opspilot.domain.labels import NAME_LABEL, Labels, SampleSeries
from opspilot.domain.step_windows import StepValues

Fetched = Mapping[Key, StepValues | Sequence[SampleSeries]]
Signature = tuple[str, ...]


class Evaluator:
    def __init__(self, grid: Grid, fetched: Fetched) -> None:
        self.grid = grid
        self.steps = grid.steps
        self.n = len(self.steps)
        self._fetched = fetched

    def _step_values(self, key: Key) -> StepValues:
        found = self._fetched[key]
        assert isinstance(found, StepValues)
        return found

    # -- dispatch --------------------------------------------------------------------------

    def eval(self, node: pp.Expr) -> Value:
        if isinstance(node, pp.NumberLiteral):
            return Scalar([node.val] * self.n)
        if isinstance(node, pp.StringLiteral):
            return StringValue(node.val)
        if isinstance(node, pp.ParenExpr):
            return self.eval(node.expr)
        if isinstance(node, pp.VectorSelector):
            return self._instant_selector(node)
        if isinstance(node, pp.MatrixSelector):
            vs = node.vector_selector
            found = self._fetched[raw_key(node, self.grid)]
            assert not isinstance(found, StepValues)
            return RangeArg(found, millis_of(node.range), millis_of(vs.offset))
        if isinstance(node, pp.UnaryExpr):
            return self._negated(self.eval(node.expr))
        if isinstance(node, pp.AggregateExpr):
            return self._aggregate(node)
        if isinstance(node, pp.BinaryExpr):
            return self._binary(node)
        if isinstance(node, pp.Call):
            return self._call(node)
        raise unsupported(f"the expression {node}")

    def vector(self, node: pp.Expr) -> Vector:
        value = self.eval(node)
        if not isinstance(value, Vector):
            raise ValidationError("query", f"expected an instant vector, got {node}")
        return value

    def scalar(self, node: pp.Expr) -> list[float]:
        value = self.eval(node)
        if not isinstance(value, Scalar):
            raise ValidationError("query", f"expected a scalar, got {node}")
        return value.values

    # -- selectors -------------------------------------------------------------------------

    def _instant_selector(self, node: pp.VectorSelector) -> Vector:
        found = self._step_values(instant_key(node, self.grid))
        return Vector([Row(s.labels, list(s.values)) for s in found.series])

    # -- unary and binary operators ----------------------------------------------------------

    def _negated(self, value: Value) -> Value:
        if isinstance(value, Scalar):
            return Scalar([-v for v in value.values])
        if isinstance(value, Vector):
            rows = [Row(without_name(r.labels), [None if v is None else -v for v in r.values])
                    for r in value.rows]
            return Vector(merged_rows(rows, self.n))
        raise ValidationError("query", "unary minus needs a scalar or an instant vector")

    def _binary(self, node: pp.BinaryExpr) -> Value:
        op = str(node.op)
        modifier = node.modifier
        return_bool = bool(modifier and modifier.return_bool)
        lhs, rhs = self.eval(node.lhs), self.eval(node.rhs)
        if isinstance(lhs, Scalar) and isinstance(rhs, Scalar):
            return Scalar([_scalar_binop(op, a, b) for a, b in zip(lhs.values, rhs.values,
                                                                     strict=True)])
        if isinstance(lhs, Vector) and isinstance(rhs, Scalar):
            return self._vector_scalar(op, lhs, rhs.values, False, return_bool)
        if isinstance(lhs, Scalar) and isinstance(rhs, Vector):
            return self._vector_scalar(op, rhs, lhs.values, True, return_bool)
        if isinstance(lhs, Vector) and isinstance(rhs, Vector):
            return VectorMatch(self.n, op, modifier).apply(lhs, rhs)
        raise ValidationError("query", f"operator {op} needs scalars or instant vectors")

    def _vector_scalar(self, op: str, vector: Vector, scalar: list[float], swap: bool,
                       return_bool: bool) -> Vector:
        comparison = op in kernels.COMPARISON
        drop = not comparison or return_bool
        rows = []
        for row in vector.rows:
            column: list[float | None] = [None] * self.n
            for i, v in enumerate(row.values):
                if v is None:
                    continue
                lv, rv = (scalar[i], v) if swap else (v, scalar[i])
                value, keep = kernels.elem_binop(op, lv, rv)
                if comparison and swap:
                    value = rv  # the vector's value, on whichever side it stands
                if return_bool:
                    value, keep = (1.0 if keep else 0.0), True
                if keep:
                    column[i] = value
            rows.append(Row(without_name(row.labels) if drop else row.labels, column))
        return Vector(merged_rows(_present(rows), self.n))

    # -- aggregations ----------------------------------------------------------------------

    def _aggregate(self, node: pp.AggregateExpr) -> Vector:
        op = str(node.op)
        vector = self.vector(node.expr)
        wants_param = op in ("topk", "bottomk", "quantile") and node.param is not None
        param = self.scalar(node.param) if wants_param and node.param is not None else None
        groups: dict[Labels, list[Row]] = {}
        for row in vector.rows:
            groups.setdefault(_grouping(row.labels, node.modifier), []).append(row)
        if op in ("topk", "bottomk"):
            assert param is not None
            return Vector(self._top(groups, param, op == "topk"))
        rows = []
        for key, members in groups.items():
            column: list[float | None] = []
            for i in range(self.n):
                present = [v for r in members if (v := r.values[i]) is not None]
                column.append(_aggregate_values(op, present, param[i] if param else 0.0)
                              if present else None)
            rows.append(Row(key, column))
        return Vector(_present(rows))

    def _top(self, groups: dict[Labels, list[Row]], param: list[float], largest: bool
             ) -> list[Row]:
        out = {id(r): Row(r.labels, [None] * self.n) for g in groups.values() for r in g}
        for members in groups.values():
            for i in range(self.n):
                k = _count_param(param[i])
                present = [r for r in members if r.values[i] is not None]
                if k < 1 or not present:
                    continue
                present.sort(key=lambda r: _top_order(r.values[i], largest))  # noqa: B023
                for r in present[:k]:
                    out[id(r)].values[i] = r.values[i]
        return _present(list(out.values()))

    # -- functions -------------------------------------------------------------------------

    def _call(self, node: pp.Call) -> Value:
        name = node.func.name
        args = node.args
        if name in RANGE_FUNCTIONS:
            found = self._step_values(function_key(node, self.grid))
            keep_name = name == "last_over_time"
            rows = [Row(s.labels if keep_name else without_name(s.labels), list(s.values))
                    for s in found.series]
            return Vector(merged_rows(rows, self.n))
        if name == "time":
            return Scalar([s / 1000 for s in self.steps])
        if name == "vector":
            return Vector([Row((), list(self.scalar(args[0])))])
        if name == "scalar":
            return Scalar(_scalar_of(self.vector(args[0]), self.n))
        if name == "histogram_quantile":
            return self._histogram_quantile(self.scalar(args[0]), self.vector(args[1]))
        return self._instant_function(name, args)

    def _instant_function(self, name: str, args: Sequence[pp.Expr]) -> Vector:
        vector = self.vector(args[0])
        params = [self.scalar(a) for a in args[1:]]
        fn = _elementwise(name, params)
        rows = []
        for row in vector.rows:
            column = [None if v is None else fn(v, i) for i, v in enumerate(row.values)]
            rows.append(Row(without_name(row.labels), column))
        return Vector(merged_rows(_present(rows), self.n))

    def _histogram_quantile(self, q: list[float], vector: Vector) -> Vector:
        groups: dict[Labels, list[tuple[float, Row]]] = {}
        for row in vector.rows:
            labels = dict(row.labels)
            bound = kernels.parse_bound(labels.pop("le", ""))
            if bound is None:
                continue
            labels.pop(NAME_LABEL, None)
            groups.setdefault(tuple(sorted(labels.items())), []).append((bound, row))
        rows = []
        for key, members in groups.items():
            column: list[float | None] = []
            for i in range(self.n):
                buckets = [(b, v) for b, r in members if (v := r.values[i]) is not None]
                column.append(kernels.bucket_quantile(q[i], buckets) if buckets else None)
            rows.append(Row(key, column))
        return Vector(_present(rows))


# -- helpers ---------------------------------------------------------------------------------


def _present(rows: list[Row]) -> list[Row]:
    return [r for r in rows if any(v is not None for v in r.values)]


def _scalar_binop(op: str, a: float, b: float) -> float:
    value, keep = kernels.elem_binop(op, a, b)
    if op in kernels.COMPARISON:
        return 1.0 if keep else 0.0
    return value


def _grouping(labels: Labels, modifier: pp.AggModifier | None) -> Labels:
    if modifier is None:
        return ()
    names = set(modifier.labels)
    if modifier.type == pp.AggModifierType.By:
        return tuple(p for p in labels if p[0] in names)
    return tuple(p for p in labels if p[0] not in names and p[0] != NAME_LABEL)


def _aggregate_values(op: str, values: list[float], param: float) -> float:
    if op == "sum":
        return kernels.plain_sum(values)
    if op == "avg":
        return kernels.avg_over_time(values)
    if op == "count":
        return float(len(values))
    if op == "min":
        return kernels.min_over_time(values)
    if op == "max":
        return kernels.max_over_time(values)
    return kernels.quantile(param, values)


def _count_param(value: float) -> int:
    if math.isnan(value) or math.isinf(value):
        raise ValidationError("query", f"topk/bottomk parameter must be a number, got {value}")
    return int(value)


def _top_order(value: float | None, largest: bool) -> tuple[int, float]:
    assert value is not None
    if math.isnan(value):
        return (1, 0.0)  # NaN is never preferred
    return (0, -value if largest else value)


def _scalar_of(vector: Vector, steps: int) -> list[float]:
    result = []
    for i in range(steps):
        present = [v for r in vector.rows if (v := r.values[i]) is not None]
        result.append(present[0] if len(present) == 1 else math.nan)
    return result


def _elementwise(name: str, params: list[list[float]]) -> Callable[[float, int], float | None]:
    if name == "abs":
        return lambda v, _: abs(v)
    if name == "round":
        nearest = params[0] if params else None
        return lambda v, i: kernels.round_to(v, nearest[i] if nearest else 1.0)
    if name == "clamp_min":
        return lambda v, i: kernels.go_max(v, params[0][i])
    if name == "clamp_max":
        return lambda v, i: kernels.go_min(v, params[0][i])
    if name == "clamp":
        low, high = params

        def clamp(v: float, i: int) -> float | None:
            if high[i] < low[i]:
                return None
            return kernels.go_max(low[i], kernels.go_min(high[i], v))

        return clamp
    raise unsupported(f"function `{name}`")


# -- vector matching -------------------------------------------------------------------------


class VectorMatch:
    """One vector-to-vector operator with its `on`/`ignoring` and `group_left/right`:
    engine.go `VectorBinop`, step by step."""

    def __init__(self, steps: int, op: str, modifier: pp.BinModifier | None) -> None:
        self.n = steps
        self.op = op
        self.return_bool = bool(modifier and modifier.return_bool)
        self.card = modifier.card if modifier else pp.VectorMatchCardinality.OneToOne
        matching = modifier.matching if modifier else None
        self.on = matching is not None and matching.type == pp.LabelModifierType.Include
        self.names = list(matching.labels) if matching is not None else []
        self.include = list(modifier.group_labels or []) if modifier else []
        if self.card == pp.VectorMatchCardinality.ManyToMany:
            raise unsupported("the set operators and, or, unless")

    def signature(self, labels: Labels) -> Signature:
        if self.on:
            values = dict(labels)
            return tuple(values.get(n, "") for n in self.names)
        skip = set(self.names) | {NAME_LABEL}
        return tuple(f"{k}\xff{v}" for k, v in labels if k not in skip)

    def apply(self, lhs: Vector, rhs: Vector) -> Vector:
        one_to_many = self.card == pp.VectorMatchCardinality.OneToMany
        many, one = (rhs, lhs) if one_to_many else (lhs, rhs)
        many_sigs = [self.signature(r.labels) for r in many.rows]
        one_sigs = [self.signature(r.labels) for r in one.rows]
        out: dict[Labels, Row] = {}
        for i in range(self.n):
            if all(r.values[i] is None for r in many.rows):
                continue  # nothing can match (Prometheus returns before checking the other side)
            table = self._one_side(one, one_sigs, i, "left" if one_to_many else "right")
            matched: dict[Signature, set[Labels]] = {}
            for row, sig in zip(many.rows, many_sigs, strict=True):
                value = row.values[i]
                found = table.get(sig)
                if value is None or found is None:
                    continue
                other = found.values[i]
                assert other is not None
                fl, fr = (other, value) if one_to_many else (value, other)
                result, keep = kernels.elem_binop(self.op, fl, fr)
                if self.return_bool:
                    result, keep = (1.0 if keep else 0.0), True
                elif not keep:
                    continue
                labels = self._result_labels(row.labels, found.labels)
                self._check_unique(sig, matched, labels)
                target = out.setdefault(labels, Row(labels, [None] * self.n))
                if target.values[i] is not None:
                    raise QueryExecutionError(
                        "vector cannot contain metrics with the same labelset",
                        {"labels": dict(labels)})
                target.values[i] = result
        return Vector(list(out.values()))

    def _one_side(self, one: Vector, sigs: list[Signature], i: int, side: str
                  ) -> dict[Signature, Row]:
        table: dict[Signature, Row] = {}
        for row, sig in zip(one.rows, sigs, strict=True):
            if row.values[i] is None:
                continue
            if sig in table:
                raise QueryExecutionError(
                    f"found duplicate series for the match group on the {side} hand-side of "
                    "the operation; many-to-many matching not allowed: matching labels must be "
                    "unique on one side", {"labels": dict(row.labels)})
            table[sig] = row
        return table

    def _check_unique(self, sig: Signature, matched: dict[Signature, set[Labels]],
                      labels: Labels) -> None:
        inserted = matched.get(sig)
        if self.card == pp.VectorMatchCardinality.OneToOne:
            if inserted is not None:
                raise QueryExecutionError(
                    "multiple matches for labels: many-to-one matching must be explicit "
                    "(group_left/group_right)")
            matched[sig] = set()
            return
        if inserted is None:
            inserted = matched[sig] = set()
        elif labels in inserted:
            raise QueryExecutionError(
                "multiple matches for labels: grouping labels must ensure unique matches")
        inserted.add(labels)

    def _result_labels(self, many: Labels, one: Labels) -> Labels:
        labels = dict(many)
        if self.op in kernels.ARITHMETIC or self.return_bool:
            labels.pop(NAME_LABEL, None)
        if self.card == pp.VectorMatchCardinality.OneToOne:
            if self.on:
                labels = {k: v for k, v in labels.items() if k in self.names}
            else:
                for name in self.names:
                    labels.pop(name, None)
        one_labels = dict(one)
        for name in self.include:
            if one_labels.get(name):
                labels[name] = one_labels[name]
            else:
                labels.pop(name, None)
        return tuple(sorted(labels.items()))
