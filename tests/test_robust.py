"""Robust aggregators on typed statistics against brute-force references and Flower's own."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.serverapp.strategy.fedtrimmedavg import trim_mean as flower_trim_mean
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedcore.robust import (
    buckets,
    bulyan,
    centered_clipping,
    clip_values,
    combine,
    flat_values,
    krum_index,
    median,
    mix,
    multikrum_indices,
    nearest_neighbours,
    pre_aggregate,
    trimmed_mean,
    values,
)
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
        combine("geometric-median", [one])


# -- multi-Krum, Bulyan, centered clipping, pre-aggregation, clipping ----------------------
def _contents(x: np.ndarray) -> list:
    """One Flower reply content per row of ``x``, as Flower's strategies read them."""
    from flwr.app import ArrayRecord, RecordDict

    return [RecordDict({"arrays": ArrayRecord([row.copy()])}) for row in x]


distinct = st.floats(-100, 100, allow_nan=False, allow_subnormal=False, width=64)


def _unique_rows(shape):
    """(n, d) matrices with distinct entries: no ties for Flower's argsort/argpartition."""
    return arrays(np.float64, shape, elements=distinct, unique=True)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(3, 9).flatmap(lambda n: st.tuples(_unique_rows((n, 3)), st.integers(0, 2))),
    st.data(),
)
def test_multikrum_selects_what_flowers_select_multikrum_does(x_f, data):
    from flwr.serverapp.strategy.multikrum import select_multikrum

    x, f = x_f
    select = data.draw(st.integers(1, len(x)))
    contents = _contents(x)
    theirs = select_multikrum(contents, f, select)
    ours = multikrum_indices(x, f, select)
    assert [contents.index(c) for c in theirs] == ours.tolist()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2).flatmap(lambda f: st.tuples(_unique_rows((4 * f + 3 + 2, 4)), st.just(f))))
def test_bulyan_is_flowers(x_f):
    from flwr.serverapp.strategy.bulyan import aggregate_n_closest_weights
    from flwr.serverapp.strategy.multikrum import select_multikrum

    x, f = x_f
    theta = len(x) - 2 * f
    chosen = select_multikrum(_contents(x), f, theta)
    rows = [c["arrays"].to_numpy_ndarrays() for c in chosen]
    reference = [np.median(np.stack([r[0] for r in rows]), axis=0)]
    (theirs,) = aggregate_n_closest_weights(reference, rows, theta - 2 * f)
    np.testing.assert_allclose(bulyan(x, f), theirs, rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2).flatmap(lambda f: st.tuples(_unique_rows((4 * f + 3 + 1, 3)), st.just(f))))
def test_bulyan_brute_force(x_f):
    """Brute force: the selected set by Krum scores, then per coordinate the beta values
    nearest the median, by a full sort."""
    x, f = x_f
    n = len(x)
    scores = []
    for i in range(n):
        d = sorted(float(np.sum((x[i] - x[j]) ** 2)) for j in range(n) if j != i)
        scores.append(sum(d[: max(1, n - f - 2)]))
    chosen = x[np.argsort(scores)[: n - 2 * f]]
    beta = n - 4 * f
    expected = []
    for column in chosen.T:
        med = np.median(column)
        expected.append(np.mean(sorted(column, key=lambda v: abs(v - med))[:beta]))
    np.testing.assert_allclose(bulyan(x, f), expected, rtol=1e-9, atol=1e-9)


def test_bulyan_refuses_fewer_than_4f_plus_3_clients():
    with pytest.raises(ValueError, match="4f \\+ 3 = 11"):
        bulyan(np.zeros((10, 2)), 2)


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(1, 7), st.integers(1, 4)), elements=finite),
    st.floats(0.1, 50),
    st.integers(1, 3),
)
def test_centered_clipping_iterates_from_the_reference_by_clipped_differences(x, tau, rounds):
    reference = np.linspace(-1, 1, x.shape[1])
    v = reference.copy()
    for _ in range(rounds):
        steps = []
        for row in x:
            diff = row - v
            norm = float(np.sqrt(np.sum(diff**2)))
            steps.append(diff if norm <= tau else diff * tau / norm)
        v = v + np.mean(steps, axis=0)
    np.testing.assert_allclose(centered_clipping(x, reference, tau, rounds), v, atol=1e-9)


def test_one_outlier_moves_centered_clipping_by_at_most_tau_over_n():
    x = np.vstack([np.zeros((9, 3)), np.full((1, 3), 1e6)])
    out = centered_clipping(x, np.zeros(3), radius=1.0, iterations=1)
    assert np.linalg.norm(out) == pytest.approx(0.1)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(1, 5), st.integers(0, 2**32 - 1))
def test_buckets_partition_the_clients_in_buckets_of_the_size(n, size, seed):
    groups = buckets(n, size, np.random.default_rng(seed))
    assert sorted(np.concatenate(groups).tolist()) == list(range(n))
    assert [len(g) for g in groups[:-1]] == [size] * (len(groups) - 1)
    assert 1 <= len(groups[-1]) <= size
    again = buckets(n, size, np.random.default_rng(seed))
    assert all(np.array_equal(a, b) for a, b in zip(groups, again, strict=True))


@settings(max_examples=40, deadline=None)
@given(
    arrays(
        np.float64, st.tuples(st.integers(2, 8), st.integers(1, 3)), elements=distinct, unique=True
    ),
    st.data(),
)
def test_nnm_groups_each_client_with_its_n_minus_f_nearest(x, data):
    f = data.draw(st.integers(0, len(x) - 1))
    groups = nearest_neighbours(x, f)
    for i, g in enumerate(groups):
        d = [float(np.sum((x[i] - x[j]) ** 2)) for j in range(len(x))]
        assert g[0] == i and len(g) == len(x) - f
        assert sorted(d[j] for j in g) == sorted(d)[: len(x) - f]


def test_a_pseudo_client_holds_its_members_weighted_mean():
    a, _ = _client([1.0, 0.0, 0.0], 10, total=(2.0, 0.0))
    b, _ = _client([4.0, 0.0, 0.0], 20, total=(4.0, 0.0))
    (pseudo,) = mix([a, b], [np.array([0, 1])])
    np.testing.assert_allclose(values([pseudo], "update")[0], [3.0, 0.0, 0.0])
    np.testing.assert_allclose(values([pseudo], "total")[0], [3.0, 0.0])
    both = combine("mean", [pseudo])
    np.testing.assert_allclose(both.mean("update"), [3.0, 0.0, 0.0])


def test_bucketing_then_median_is_the_median_of_the_bucket_means():
    u = [1.0, 2.0, 3.0, 4.0, 8.0, 9.5]
    cohort = [_client([v, 0.0, 0.0], 1)[0] for v in u]
    rng = np.random.default_rng(3)
    groups = buckets(6, 2, np.random.default_rng(3))
    means = [np.mean([u[i] for i in g]) for g in groups]
    robust = combine("fedmedian", pre_aggregate("bucketing", cohort, bucket_size=2, rng=rng))
    assert robust.mean("update")[0] == pytest.approx(np.median(means))


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(1, 6), st.just(3)), elements=finite),
    st.floats(0.01, 20),
)
def test_server_clipping_bounds_each_update_and_keeps_its_direction_and_weight(x, norm):
    cohort = [_client(row, 7)[0] for row in x]
    clipped = clip_values(cohort, norm)
    for before, after in zip(cohort, clipped, strict=True):
        u, v = flat_values([before])[0], flat_values([after])[0]
        assert np.linalg.norm(v) <= norm * (1 + 1e-12)
        scale = min(1.0, norm / np.linalg.norm(u)) if np.linalg.norm(u) > 0 else 1.0
        np.testing.assert_allclose(v, u * scale, rtol=1e-12, atol=1e-12)
        assert after["examples"] == before["examples"]


def test_multikrum_averages_the_chosen_by_their_weights_as_flower():
    honest = [_client([u, u, u], w)[0] for u, w in ((0.1, 10), (0.2, 30), (0.15, 20))]
    attacker = _client([50.0, 50.0, 50.0], 100)[0]
    robust = combine("multikrum", [*honest, attacker], num_malicious=1, select=3)
    expected = (0.1 * 10 + 0.2 * 30 + 0.15 * 20) / 60
    np.testing.assert_allclose(robust.mean("update"), [expected] * 3)
    assert robust.clients == 3


def test_every_rule_keeps_one_attacker_among_the_honest_values():
    honest = [_client([u, -u, 0.1 * u], 10)[0] for u in np.linspace(0.1, 0.4, 7)]
    cohort = [*honest, _client([10.0, 10.0, 10.0], 100)[0]]
    for name in ("multikrum", "bulyan", "centered-clipping"):
        robust = combine(name, cohort, num_malicious=1, radius=0.5)
        assert 0.05 <= robust.mean("update")[0] <= 0.45, name
