"""The percentile sketch keeps its documented error: within α (relative) of the value at
the quantile's rank, for any data; merging equals sketching the union."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from opspilot.domain import sketch
from opspilot.domain.metrics import MAX_ABS_VALUE

finite = st.floats(-MAX_ABS_VALUE, MAX_ABS_VALUE, allow_nan=False, allow_infinity=False)


@given(st.lists(finite, min_size=1, max_size=200), st.sampled_from([0.5, 0.9, 0.95, 0.99]))
def test_a_quantile_is_within_the_relative_accuracy_of_the_value_at_its_rank(
    values: list[float], fraction: float,
) -> None:
    estimate = sketch.quantile(sketch.sketch_of(values), fraction)
    at_rank = sorted(values)[math.floor(fraction * (len(values) - 1))]
    assert abs(estimate - at_rank) <= sketch.RELATIVE_ACCURACY * abs(at_rank) * (1 + 1e-9)


@given(st.lists(finite, max_size=50), st.lists(finite, max_size=50))
def test_merging_sketches_is_sketching_the_union(left: list[float], right: list[float]) -> None:
    merged = sketch.merge([sketch.sketch_of(left), sketch.sketch_of(right)])
    assert merged == sketch.sketch_of(left + right)


def test_keys_cover_every_storable_magnitude() -> None:
    for value in (5e-324, 1e-300, 1.0, MAX_ABS_VALUE):
        key = sketch.sketch_key(value)
        assert key > 0 and sketch.sketch_key(-value) == -key
        assert math.isclose(sketch.key_value(key), value, rel_tol=sketch.RELATIVE_ACCURACY) \
            or value < 1e-300  # subnormals lose precision in the representative
    assert sketch.sketch_key(0.0) == 0 and sketch.key_value(0) == 0.0
