"""Robust aggregators on typed statistics against brute-force references and Flower's own."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.serverapp.strategy.fedtrimmedavg import trim_mean as flower_trim_mean
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedcore.robust import combine, krum_index, median, trimmed_mean, values
from fedcore.statistics import INTEGER, ArraySpec, Spec, contribution, decode

finite = st.floats(-100, 100, allow_nan=False, width=64)


@st.composite
def _with_gaps(draw):
    """A (clients, d) matrix with some entries missing (NaN), as zero weights leave them."""
    n, d = draw(st.integers(1, 9)), draw(st.integers(1, 5))
    x = draw(arrays(np.float64, (n, d), elements=finite))
    gaps = draw(arrays(np.bool_, (n, d)))
    return np.where(gaps, np.nan, x)


def _per_column(x: np.ndarray, f) -> np.ndarray:
    out = []
    for column in x.T:
        present = np.sort(column[~np.isnan(column)])
        out.append(f(present) if len(present) else np.nan)
    return np.array(out)


@settings(max_examples=80, deadline=None)
@given(_with_gaps(), st.sampled_from([0.0, 0.1, 0.2, 0.34, 0.49]))
def test_trimmed_mean_cuts_int_beta_k_at_each_end_of_the_present_values(x, beta):
    def brute(v):
        cut = int(beta * len(v))
        return v[cut : len(v) - cut].mean()

    np.testing.assert_allclose(trimmed_mean(x, beta), _per_column(x, brute), rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 9), st.integers(1, 4)), elements=finite))
def test_without_gaps_trimmed_mean_is_flowers(x):
    np.testing.assert_allclose(trimmed_mean(x, 0.2), flower_trim_mean(x, 0.2), rtol=1e-12)


@settings(max_examples=80, deadline=None)
@given(_with_gaps())
def test_median_of_the_present_values(x):
    np.testing.assert_array_equal(median(x), _per_column(x, np.median))


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(1, 8), st.integers(1, 4)), elements=finite),
    st.integers(0, 3),
)
def test_krum_picks_the_least_score_of_the_nearest_neighbours(x, f):
    n = len(x)
    closest = max(1, n - f - 2)
    scores = []
    for i in range(n):
        others = sorted(float(np.sum((x[i] - x[j]) ** 2)) for j in range(n) if j != i)
        scores.append(sum(others[:closest]))
    chosen = krum_index(x, f)
    assert scores[chosen] == pytest.approx(min(scores), rel=1e-6, abs=1e-6)


def test_the_trimmed_fraction_must_leave_a_middle():
    with pytest.raises(ValueError, match=r"\[0, 0.5\)"):
        trimmed_mean(np.zeros((3, 1)), 0.5)


SPEC = Spec.of(
    {
        "update": ArraySpec((3,), bound=10.0, weight="examples"),
        "rows": ArraySpec((2, 2), bound=10.0, weight="count"),
        "count": ArraySpec((2,), INTEGER, 100),
        "total": ArraySpec((2,), bound=10.0),
        "examples": ArraySpec((), INTEGER, 100),
    }
)


def _client(update, examples, rows=((0.0, 0.0), (0.0, 0.0)), count=(1, 1), total=(0.0, 0.0)):
    """One client's statistics as its hook returns them (values; the wire vector weighs
    them), and their decoding: what the server holds of that client."""
    stats = {
        "update": np.array(update, float),
        "rows": np.array(rows, float),
        "count": np.array(count, float),
        "total": np.array(total, float),
        "examples": np.array(float(examples)),
    }
    return decode(contribution(stats, SPEC), SPEC, 1), contribution(stats, SPEC)


def test_one_byzantine_client_cannot_move_the_median_out_of_the_honest_range():
    """Four honest clients and one that sends the bound everywhere with the largest weight:
    the plain weighted mean follows it, the median and trimmed mean stay among the honest."""
    clients = [_client([u, -u, 0.1 * u], 10) for u in (0.1, 0.2, 0.3, 0.4)]
    clients.append(_client([10.0, 10.0, 10.0], 100))  # the attacker
    cohort = [summed for summed, _ in clients]
    plain = decode(sum(wire for _, wire in clients), SPEC, len(cohort))
    assert plain.mean("update")[0] > 5
    for name in ("fedmedian", "fedtrimmedavg"):
        robust = combine(name, cohort, trim_beta=0.2)
        np.testing.assert_allclose(robust.mean("update"), [0.3, -0.2, 0.03], atol=1e-12)
        assert robust["examples"] == 140  # weights are summed: how much data backs it
        assert robust.clients == 5
    krum = combine("krum", cohort, num_malicious=1)
    assert 0.1 <= krum.mean("update")[0] <= 0.4


def test_a_row_no_client_holds_stays_empty_and_absent_values_do_not_count():
    a, _ = _client([0.0] * 3, 1, rows=((1.0, 1.0), (0.0, 0.0)), count=(2, 0))
    b, _ = _client([0.0] * 3, 1, rows=((3.0, 3.0), (0.0, 0.0)), count=(1, 0))
    c, _ = _client([0.0] * 3, 1, rows=((5.0, 5.0), (0.0, 0.0)), count=(1, 0))
    robust = combine("fedmedian", [a, b, c])
    np.testing.assert_allclose(robust.mean("rows")[0], [3.0, 3.0])
    assert np.isnan(robust.mean("rows")[1]).all()  # no client rated it: no value
    np.testing.assert_array_equal(values([a, b, c], "rows")[:, 1], np.full((3, 2), np.nan))


def test_an_unweighted_array_takes_the_median_times_the_cohort():
    cohort = [_client([0.0] * 3, 1, total=(t, -t))[0] for t in (1.0, 2.0, 9.0)]
    robust = combine("fedmedian", cohort)
    np.testing.assert_allclose(robust.mean("total"), [2.0, -2.0])


def test_combine_refuses_what_is_not_one_client_each():
    one, wire = _client([0.0] * 3, 1)
    with pytest.raises(ValueError, match="one client's statistics"):
        combine("fedmedian", [one, decode(wire * 2, SPEC, 2)])
    with pytest.raises(ValueError, match="unknown robust aggregator"):
        combine("mean", [one])
