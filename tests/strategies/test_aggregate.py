"""The streaming weighted mean against a brute-force reference."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from strategies.aggregate import WeightedMean, spread, weighted_mean

finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@st.composite
def cohorts(draw):
    n = draw(st.integers(1, 8))
    shape = draw(hnp.array_shapes(max_dims=2, max_side=5))
    updates = [
        {
            "w": draw(hnp.arrays(np.float32, shape, elements=finite)),
            "b": draw(hnp.arrays(np.float32, (3,), elements=finite)),
        }
        for _ in range(n)
    ]
    weights = draw(st.lists(st.floats(0.1, 1e4), min_size=n, max_size=n))
    return updates, weights


@settings(max_examples=60, deadline=None)
@given(cohorts())
def test_streaming_mean_equals_brute_force_weighted_mean(cohort):
    updates, weights = cohort
    got = weighted_mean(updates, weights)
    total = sum(weights)
    for name in ("w", "b"):
        expected = (
            sum(w * u[name].astype(np.float64) for u, w in zip(updates, weights, strict=True))
            / total
        )
        np.testing.assert_allclose(got[name], expected, rtol=1e-5, atol=1e-4)
        assert got[name].dtype == np.float32


def test_result_keeps_input_dtype():
    got = weighted_mean([{"a": np.ones(2, np.float16)}], [2.0])
    assert got["a"].dtype == np.float16


def test_update_with_nan_is_rejected_and_leaves_sum_unchanged():
    acc = WeightedMean({"w": ((2,), np.float32)})
    acc.add({"w": np.array([1.0, 1.0], np.float32)}, 1.0)
    with pytest.raises(ValueError, match="NaN"):
        acc.add({"w": np.array([np.nan, 0.0], np.float32)}, 1.0)
    assert acc.count == 1
    np.testing.assert_array_equal(acc.result()["w"], [1.0, 1.0])


def test_update_with_wrong_shape_or_names_is_rejected():
    acc = WeightedMean({"w": ((2,), np.float32)})
    with pytest.raises(ValueError, match="shape"):
        acc.add({"w": np.zeros(3, np.float32)}, 1.0)
    with pytest.raises(ValueError, match="missing"):
        acc.add({"v": np.zeros(2, np.float32)}, 1.0)


def test_negative_weight_is_rejected():
    with pytest.raises(ValueError, match="weight"):
        WeightedMean().add({"w": np.zeros(1)}, -1.0)


def test_empty_mean_raises():
    with pytest.raises(ValueError, match="no update"):
        WeightedMean().result()


def test_spread_reports_worst_tenth():
    values = [
        0.1,
        0.9,
        0.8,
        0.7,
        0.6,
        0.5,
        0.4,
        0.3,
        0.2,
        1.0,
        0.95,
        0.85,
        0.75,
        0.65,
        0.55,
        0.45,
        0.35,
        0.25,
        0.15,
        0.05,
    ]
    s = spread(values)
    assert s["worst10"] == pytest.approx((0.05 + 0.1) / 2)
    assert s["min"] == 0.05
    assert s["mean"] == pytest.approx(np.mean(values))
    assert s["std"] == pytest.approx(np.std(values))
