"""The Gaussian mechanism on updates: clipping bounds, noise scale, adaptive composition."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from privacy.mechanisms import (
    adaptive_update_noise,
    clip_update,
    effective_noise,
    privatize_update,
    update_norm,
)

values = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@settings(max_examples=200, deadline=None)
@given(
    arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 6)), elements=values),
    arrays(np.float32, st.integers(1, 8), elements=values),
    st.floats(1e-3, 1e3),
)
def test_clipped_update_never_exceeds_the_bound_and_keeps_its_direction(w, b, clip):
    reference = {"w": np.zeros_like(w), "b": np.ones_like(b)}
    update = {"w": w, "b": b}
    clipped, norm = clip_update(update, reference, clip)
    assert norm == pytest.approx(update_norm(update, reference))
    assert update_norm(clipped, reference) <= clip * (1 + 1e-5) + 1e-6
    if norm <= clip:  # short updates pass unchanged
        np.testing.assert_allclose(clipped["w"], w, rtol=1e-6, atol=1e-6)
    else:  # long ones are scaled, not distorted
        scale = clip / norm
        np.testing.assert_allclose(clipped["w"], w * scale, rtol=1e-4, atol=1e-4)


def test_local_dp_noise_has_the_calibrated_scale():
    reference = {"w": np.zeros(200_000, np.float32)}
    update = {"w": np.full(200_000, 1e-3, np.float32)}
    released, norm = privatize_update(update, reference, 0.5, 2.0, np.random.default_rng(0))
    assert norm == pytest.approx(math.sqrt(200_000) * 1e-3, rel=1e-5)
    noise = released["w"] - update["w"]
    assert noise.std() == pytest.approx(2.0 * 0.5, rel=0.01)


def test_local_dp_refuses_zero_noise():
    with pytest.raises(ValueError, match="noise_multiplier"):
        privatize_update({"w": np.ones(3)}, {"w": np.zeros(3)}, 1.0, 0.0, np.random.default_rng())


@given(st.floats(0.1, 5.0), st.floats(1.01, 20.0))
def test_adaptive_update_noise_composes_back_to_the_effective_noise(z, ratio):
    count_std = z * ratio
    assert effective_noise(adaptive_update_noise(z, count_std), count_std) == pytest.approx(z)


def test_adaptive_noise_needs_count_noise_above_the_effective_noise():
    with pytest.raises(ValueError, match="count noise"):
        adaptive_update_noise(1.0, 0.5)
