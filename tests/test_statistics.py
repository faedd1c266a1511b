"""Typed statistics: the wire vector and its decoding against brute-force sums."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcore.statistics import (
    INTEGER,
    ArraySpec,
    Spec,
    StatisticsError,
    clip_l2,
    contribution,
    decode,
)


def _spec(rows: int, cols: int, bound: float, max_count: int) -> Spec:
    """Every weight shape at once: per row, per entry, scalar, and an unweighted integer."""
    return Spec.of(
        {
            "rows": ArraySpec((rows, cols), bound=bound, weight="count"),
            "count": ArraySpec((rows,), INTEGER, max_count),
            "entries": ArraySpec((rows, cols), bound=bound, weight="entry-w"),
            "entry-w": ArraySpec((rows, cols), bound=2.0),
            "scalar": ArraySpec((cols,), bound=bound, weight="w"),
            "w": ArraySpec((), bound=float(max_count)),
            "table": ArraySpec((rows, 2), INTEGER, max_count),
        }
    )


@st.composite
def _cohorts(draw):
    rows, cols = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    bound, max_count = draw(st.sampled_from([0.5, 1.0, 3.0])), draw(st.integers(1, 50))
    clients = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    cohort = []
    for _ in range(clients):
        cohort.append(
            {
                "rows": rng.normal(0, bound, (rows, cols)),  # some entries beyond the bound
                "count": rng.integers(0, max_count + 1, rows).astype(float),
                "entries": rng.normal(0, bound, (rows, cols)),
                "entry-w": rng.uniform(0, 2, (rows, cols)),
                "scalar": rng.normal(0, bound, cols),
                "w": np.array(float(rng.integers(0, max_count + 1))),
                "table": rng.integers(-max_count, max_count + 1, (rows, 2)).astype(float),
            }
        )
    return _spec(rows, cols, bound, max_count), cohort


@settings(max_examples=60, deadline=None)
@given(_cohorts())
def test_decoded_sums_equal_brute_force(case):
    spec, cohort = case
    summed = decode(sum(contribution(c, spec) for c in cohort), spec, len(cohort))
    b = spec["rows"].bound

    def total(f):
        return sum(f(c) for c in cohort)

    clip = lambda x: np.clip(x, -b, b)  # noqa: E731
    np.testing.assert_allclose(
        summed["rows"], total(lambda c: clip(c["rows"]) * c["count"][:, None]), atol=1e-9
    )
    np.testing.assert_allclose(
        summed["entries"], total(lambda c: clip(c["entries"]) * c["entry-w"]), atol=1e-9
    )
    np.testing.assert_allclose(
        summed["scalar"], total(lambda c: clip(c["scalar"]) * c["w"]), atol=1e-9
    )
    assert np.array_equal(summed["count"], total(lambda c: c["count"]))
    assert np.array_equal(summed["table"], total(lambda c: c["table"]))
    # the weighted mean of each row over the clients that have data in it
    counts = total(lambda c: c["count"])
    mean = summed.mean("rows")
    for r in range(len(counts)):
        if counts[r] == 0:
            assert np.isnan(mean[r]).all()
        else:
            expected = total(lambda c, r=r: clip(c["rows"][r]) * c["count"][r]) / counts[r]
            np.testing.assert_allclose(mean[r], expected, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(_cohorts())
def test_every_wire_entry_is_within_the_spec_bound(case):
    spec, cohort = case
    for c in cohort:
        assert np.abs(contribution(c, spec)).max() <= spec.bound + 1e-12


def test_spec_refuses_inconsistent_weights():
    with pytest.raises(StatisticsError, match="unknown"):
        Spec.of({"x": ArraySpec((3,), weight="n")})
    with pytest.raises(StatisticsError, match="prefix"):
        Spec.of(
            {"x": ArraySpec((3, 2)), "n": ArraySpec((2,))} | {"y": ArraySpec((3, 2), weight="n")}
        )
    with pytest.raises(StatisticsError, match="itself weighted"):
        Spec.of(
            {
                "x": ArraySpec((2,), weight="w"),
                "w": ArraySpec((2,), weight="v"),
                "v": ArraySpec((2,)),
            }
        )
    with pytest.raises(StatisticsError, match="cannot be weighted"):
        Spec.of({"x": ArraySpec((2,), INTEGER, 5, weight="w"), "w": ArraySpec((2,))})
    with pytest.raises(StatisticsError, match="whole"):
        ArraySpec((2,), INTEGER, 2.5)


@pytest.mark.parametrize(
    ("stats", "message"),
    [
        ({"x": np.zeros(2)}, "missing"),
        ({"x": np.zeros(3), "n": np.ones(2), "extra": np.zeros(1)}, "unexpected"),
        ({"x": np.zeros(2), "n": np.ones(2)}, "shape"),
        ({"x": np.array([0, np.nan, 0]), "n": np.ones(3)}, "not finite"),
        ({"x": np.zeros(3), "n": np.array([1, 1.5, 1])}, "not whole"),
        ({"x": np.zeros(3), "n": np.array([1, 11, 1])}, "beyond its bound"),
        ({"x": np.zeros(3), "n": np.array([1, -1, 1])}, "negative"),
    ],
)
def test_bad_statistics_are_named(stats, message):
    spec = Spec.of({"x": ArraySpec((3,), weight="n"), "n": ArraySpec((3,), INTEGER, 10)})
    with pytest.raises(StatisticsError, match=message):
        contribution(stats, spec)


def test_clip_l2():
    v = np.array([3.0, 4.0])
    np.testing.assert_allclose(clip_l2(v, 1.0), [0.6, 0.8])
    np.testing.assert_array_equal(clip_l2(v, 10.0), v)
