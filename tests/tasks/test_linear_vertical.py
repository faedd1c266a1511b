"""Vertical products by two-party secret sharing with a dealer's triple: exact ring
arithmetic, the product within its encoding bound, vertical ridge equal to pooled ridge."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import Ridge

from fedcore.tasks.linear import products, vertical


@given(rows=st.integers(1, 40), da=st.integers(1, 6), db=st.integers(1, 6), seed=st.integers(0, 99))
@settings(max_examples=30, deadline=None)
def test_ring_matmul_equals_uint64_matmul(rows, da, db, seed):
    rng = np.random.default_rng(seed)
    a, b = vertical.uniform((rows, da), rng), vertical.uniform((rows, db), rng)
    assert np.array_equal(vertical.ring_matmul(a, b), a.T @ b)  # numpy wraps mod 2^64


def test_ring_matmul_is_exact_across_row_chunks(monkeypatch):
    monkeypatch.setattr(vertical, "_CHUNK_ROWS", 7)
    rng = np.random.default_rng(0)
    a, b = vertical.uniform((30, 3), rng), vertical.uniform((30, 2), rng)
    assert np.array_equal(vertical.ring_matmul(a, b), a.T @ b)


def test_shares_add_up_to_the_product_and_each_alone_is_masked():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(-1, 1, (50, 3)), rng.uniform(-1, 1, (50, 2))
    f = 16
    a_ring, b_ring = vertical.encode(a, f), vertical.encode(b, f)
    deal_a, deal_b = vertical.deal(50, 3, 2, rng)
    to_a, to_b = vertical.expand_a(deal_a, 50, 3, 2), vertical.expand_b(deal_b, 50, 2)
    assert np.array_equal(to_a.z + to_b.z, vertical.ring_matmul(to_a.u, to_b.v))
    e, masked_b = vertical.mask(a_ring, to_a.u), vertical.mask(b_ring, to_b.v)
    c_a, c_b = vertical.share_a(a_ring, masked_b, to_a), vertical.share_b(e, to_b)
    assert np.array_equal(c_a + c_b, vertical.ring_matmul(a_ring, b_ring))
    # what B receives is A under a one-time pad: the same A under another pad differs
    other, _ = vertical.deal(50, 3, 2, np.random.default_rng(2))
    assert not np.array_equal(e, vertical.mask(a_ring, vertical.expand_a(other, 50, 3, 2).u))
    assert np.array_equal(e + to_a.u, a_ring)


@given(
    rows=st.integers(6, 200),  # more records than columns (fewer are refused)
    da=st.integers(1, 5),
    db=st.integers(1, 5),
    a_bound=st.sampled_from([0.1, 1.0, 50.0]),
    b_bound=st.sampled_from([1.0, 400.0]),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=40, deadline=None)
def test_secure_product_is_within_its_encoding_bound(rows, da, db, a_bound, b_bound, seed):
    rng = np.random.default_rng(seed)
    a = rng.uniform(-a_bound, a_bound, (rows, da))
    b = rng.uniform(-b_bound, b_bound, (rows, db))
    product = vertical.secure_product(a, b, a_bound=a_bound, b_bound=b_bound, dealer_rng=rng)
    assert np.abs(product.value - a.T @ b).max() <= product.error_bound


def test_fewer_fraction_bits_give_a_larger_error_within_their_bound():
    rng = np.random.default_rng(3)
    a, b = rng.uniform(-1, 1, (500, 4)), rng.uniform(-1, 1, (500, 4))
    coarse = vertical.secure_product(a, b, a_bound=1, b_bound=1, dealer_rng=rng, frac_bits=6)
    fine = vertical.secure_product(a, b, a_bound=1, b_bound=1, dealer_rng=rng)
    assert fine.frac_bits > 6
    errors = [np.abs(p.value - a.T @ b).max() for p in (coarse, fine)]
    assert errors[1] < errors[0] <= coarse.error_bound


def test_inputs_beyond_their_public_bound_are_refused():
    a = np.array([[2.0], [0.0]])
    with pytest.raises(ValueError, match="beyond its bound 1"):
        vertical.secure_product(a, a, a_bound=1, b_bound=5, dealer_rng=np.random.default_rng(0))


def test_inputs_the_protocol_would_get_wrong_or_leak_through_are_refused():
    """NaN passes a bound check and would encode as garbage; more fraction bits than the
    ring holds would overflow silently; with no more records than columns the opened
    product gives the other party's columns away (B holds B and A^T B: it solves for A)."""
    rng = np.random.default_rng(0)
    a, b = rng.uniform(-1, 1, (20, 2)), rng.uniform(-1, 1, (20, 3))
    with pytest.raises(ValueError, match="A has entries that are not finite"):
        vertical.secure_product(np.where(a > 0.9, np.nan, a), b, a_bound=1, b_bound=1)
    with pytest.raises(ValueError, match="frac_bits = 40"):
        vertical.secure_product(a, b, a_bound=1, b_bound=1, frac_bits=40)
    with pytest.raises(ValueError, match="more records than columns"):
        vertical.secure_product(a[:3], b[:3], a_bound=1, b_bound=1)


def test_a_product_that_cannot_fit_the_ring_is_refused():
    with pytest.raises(ValueError, match="64-bit ring"):
        vertical.frac_bits_for(10**9, 1e6, 1e6)


def test_traffic_counts_every_message():
    rows, da, db = 20, 3, 4
    rng = np.random.default_rng(0)
    traffic = vertical.Traffic()
    vertical.secure_product(
        rng.uniform(-1, 1, (rows, da)),
        rng.uniform(-1, 1, (rows, db)),
        a_bound=1,
        b_bound=1,
        dealer_rng=rng,
        traffic=traffic,
    )
    assert traffic.bytes == {
        ("dealer", "A"): 32,  # a seed (AES-256 key)
        ("dealer", "B"): 32 + 8 * da * db,  # a seed and Z_B
        ("A", "B"): 8 * (rows * da + da * db),  # E, then the opened share
        ("B", "A"): 8 * (rows * db + da * db),
    }


def _ridge_error_bound(x, y, alpha, eps_gram, eps_cross, d_a, d_b):
    """|w' - w| when the cross block A^T B (and its transpose) of the centred system is off
    by at most ``eps_gram`` per entry and A^T y by ``eps_cross`` (centring adds no error:
    the sums are local and exact)."""
    n, d = x.shape
    s = x.sum(0)
    a = products.centred_gram(x.T @ x, s, n) + alpha * np.eye(d)
    w = np.linalg.solve(a, x.T @ y - s * y.sum() / n)
    e_mat = math.sqrt(2 * d_a * d_b) * eps_gram  # Frobenius norm of both off-diagonal blocks
    e_vec = math.sqrt(d_a) * eps_cross
    dw = (e_vec + e_mat * np.linalg.norm(w)) / (np.linalg.eigvalsh(a).min() - e_mat)
    return dw, (np.linalg.norm(s) * dw) / n


@pytest.mark.parametrize("split", [1, 4, 9])
def test_vertical_ridge_equals_pooled_ridge_within_the_bound(split):
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    fit = vertical.vertical_ridge(
        x[:, :split],
        x[:, split:],
        y,
        0.5,
        a_bound=0.25,
        b_bound=400.0,
        dealer_rng=np.random.default_rng(split),
    )
    reference = Ridge(alpha=0.5).fit(x, y)
    eps = fit.cross.error_bound
    dw, dintercept = _ridge_error_bound(x, y, 0.5, eps, eps, split, x.shape[1] - split)
    coef = np.concatenate([fit.coef_a, fit.coef_b])
    assert np.abs(coef - reference.coef_).max() <= dw
    assert abs(fit.intercept - reference.intercept_) <= dintercept
    assert np.abs(coef - reference.coef_).max() < 1e-2  # and close in absolute terms


def test_vertical_ridge_without_intercept_equals_pooled_ridge():
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (300, 6))
    y = x @ rng.standard_normal(6)
    fit = vertical.vertical_ridge(
        x[:, :2], x[:, 2:], y, 1.0, a_bound=1, b_bound=10, fit_intercept=False,
        dealer_rng=rng,
    )  # fmt: skip
    reference = Ridge(alpha=1.0, fit_intercept=False).fit(x, y)
    np.testing.assert_allclose(np.concatenate([fit.coef_a, fit.coef_b]), reference.coef_, atol=1e-4)
    assert fit.intercept == 0.0
