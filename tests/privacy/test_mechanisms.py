"""The Gaussian mechanism on wire vectors: clipping bounds, noise scale, adaptive composition."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedcore.statistics import clip_l2
from privacy.mechanisms import (
    adaptive_update_noise,
    add_gaussian,
    discrete_gaussian,
    discrete_laplace,
    effective_noise,
)

values = st.floats(-1e3, 1e3, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.integers(1, 40), elements=values), st.floats(1e-3, 1e3))
def test_a_clipped_vector_never_exceeds_the_bound_and_keeps_its_direction(v, clip):
    """(Moved from the model-update clip, which typed statistics replaced.)"""
    clipped, norm = clip_l2(v, clip), float(np.linalg.norm(v))
    assert np.linalg.norm(clipped) <= clip * (1 + 1e-9)
    if norm <= clip:  # short vectors pass unchanged
        np.testing.assert_array_equal(clipped, v)
    else:  # long ones are scaled, not distorted
        np.testing.assert_allclose(clipped, v * (clip / norm), rtol=1e-9, atol=1e-12)


def test_local_dp_noise_has_the_calibrated_scale():
    v = clip_l2(np.full(200_000, 1e-3), 0.5)
    released = add_gaussian(v, 2.0 * 0.5, np.random.default_rng(0))
    assert (released - v).std() == pytest.approx(2.0 * 0.5, rel=0.01)


@pytest.mark.parametrize("std", [0.0, -1.0, math.inf, math.nan])
def test_the_gaussian_mechanism_refuses_no_noise(std):
    with pytest.raises(ValueError, match="noise std"):
        add_gaussian(np.ones(3), std, np.random.default_rng())


@given(st.floats(0.1, 5.0), st.floats(1.01, 20.0))
def test_adaptive_update_noise_composes_back_to_the_effective_noise(z, ratio):
    count_std = z * ratio
    assert effective_noise(adaptive_update_noise(z, count_std), count_std) == pytest.approx(z)


def test_adaptive_noise_needs_count_noise_above_the_effective_noise():
    with pytest.raises(ValueError, match="count noise"):
        adaptive_update_noise(1.0, 0.5)


def _pmf_gap(draws: np.ndarray, weight) -> float:
    """The largest gap between the draws' frequencies and the normalised ``weight`` over
    the integers the draws reach (and a margin around them)."""
    support = np.arange(draws.min() - 3, draws.max() + 4)
    expected = np.array([weight(x) for x in support], np.float64)
    expected /= sum(weight(x) for x in range(-10_000, 10_001))
    counts = np.array([(draws == x).sum() for x in support]) / len(draws)
    return float(np.abs(counts - expected).max())


@pytest.mark.parametrize("t", [0.7, 3.0])
def test_discrete_laplace_has_its_probability_mass(t):
    draws = discrete_laplace((200_000,), t, np.random.default_rng(1))
    assert draws.dtype == np.int64
    assert _pmf_gap(draws, lambda x: math.exp(-abs(x) / t)) < 0.004


@pytest.mark.parametrize("sigma", [0.6, 1.5, 4.0])
def test_discrete_gaussian_has_its_probability_mass(sigma):
    """Against the definition, P(x) ∝ exp(-x^2 / (2 sigma^2)) over the integers (below
    sigma 1 it is far from a rounded normal, which this would catch)."""
    draws = discrete_gaussian((200_000,), sigma, np.random.default_rng(2))
    assert draws.dtype == np.int64
    assert _pmf_gap(draws, lambda x: math.exp(-(x * x) / (2 * sigma * sigma))) < 0.004


def test_a_wide_discrete_gaussian_has_the_normal_variance():
    draws = discrete_gaussian((100_000,), 40.0, np.random.default_rng(3))
    assert draws.std() == pytest.approx(40.0, rel=0.02) and abs(draws.mean()) < 0.5
