"""The Gaussian mechanism on wire vectors, and integer noise for counts, as pure functions
of arrays.

Client-level DP (DP-FedAvg, McMahan et al. 2018) and local DP both clip a client's wire
vector (:func:`fedcore.statistics.clip_l2`) and add Gaussian noise to it (local DP) or to the
sum of the clipped vectors (central DP). Adaptive clipping (Andrew et al. 2021) also
releases a noised count of unclipped updates; the two releases compose into one Gaussian
mechanism whose effective noise multiplier is what the ledger records.
"""

from __future__ import annotations

import math

import numpy as np


def add_gaussian(vector: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """``vector`` plus independent N(0, std^2) noise on every entry, drawn from ``rng``: the
    Gaussian mechanism on a clipped wire vector (local DP) or on the sum of them (central)."""
    if not (math.isfinite(std) and std > 0):
        raise ValueError(f"noise std must be finite and > 0, got {std!r}")
    return vector + rng.normal(0.0, std, vector.shape)


def discrete_laplace(shape: tuple[int, ...], t: float, rng: np.random.Generator) -> np.ndarray:
    """Integers with ``P(x) ∝ exp(-|x| / t)``: the difference of two geometric variables
    on {0, 1, ...} with ``P(k) = (1 - q) q^k``, ``q = exp(-1 / t)``."""
    p = -math.expm1(-1.0 / t)  # 1 - q, without cancellation for large t
    return (rng.geometric(p, shape) - rng.geometric(p, shape)).astype(np.int64)


def discrete_gaussian(shape: tuple[int, ...], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Integers with ``P(x) ∝ exp(-x^2 / (2 sigma^2))``, the discrete Gaussian, by Canonne,
    Kamath and Steinke's rejection from the discrete Laplace of scale ``t = floor(sigma) + 1``
    (2020, Algorithm 3), vectorised: a draw ``y`` is kept with probability
    ``exp(-(|y| - sigma^2 / t)^2 / (2 sigma^2))``, the rest drawn again. The acceptance test
    uses float64 arithmetic, not the paper's exact rationals (its guarantee is stated for the
    exact distribution; the difference is within float64 rounding)."""
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be finite and > 0, got {sigma!r}")
    t = math.floor(sigma) + 1.0
    out = np.empty(int(np.prod(shape)), np.int64)
    todo = np.arange(out.size)
    while todo.size:
        y = discrete_laplace((todo.size,), t, rng)
        keep = rng.random(todo.size) < np.exp(-((np.abs(y) - sigma**2 / t) ** 2) / (2 * sigma**2))
        out[todo[keep]] = y[keep]
        todo = todo[~keep]
    return out.reshape(shape)


def adaptive_update_noise(effective: float, count_stddev: float) -> float:
    """The noise multiplier for the updates such that, with the unclipped count released with
    noise ``count_stddev``, the round is one Gaussian mechanism of noise ``effective``.

    Two Gaussian releases of the same cohort compose as ``z^-2 = z_update^-2 + z_count^-2``.
    Each client contributes a bit in {0, 1} to the count, so its sensitivity is 1 and
    ``z_count = count_stddev``. (Andrew et al. use centred bits of sensitivity 1/2, hence
    Flower's ``2 * count_stddev``; Flower's clipping mods send uncentred bits.)
    """
    if not (effective > 0 and count_stddev > 0):
        raise ValueError("effective noise and count_stddev must be > 0")
    if count_stddev <= effective:
        raise ValueError(
            f"count noise std {count_stddev:g} must exceed the effective noise multiplier "
            f"{effective:g}: the count alone would spend more than the whole budget"
        )
    return (effective**-2 - count_stddev**-2) ** -0.5


def noised_unclipped_fraction(clipped: int, total: int, count_stddev: float, rng) -> float:
    """The fraction of ``total`` updates left unclipped, its count noised with
    ``N(0, count_stddev^2)`` from ``rng`` (the count adaptive clipping releases)."""
    return (total - clipped + float(rng.normal(0.0, count_stddev))) / max(total, 1)


def geometric_clip(clip_norm: float, unclipped: float, target: float, lr: float) -> float:
    """Andrew et al. (2021)'s geometric update of the clip norm toward the ``target``
    quantile of the update norms: ``C exp(-lr (unclipped - target))``. It grows while fewer
    than ``target`` of the updates are left unclipped and shrinks while more are."""
    return clip_norm * math.exp(-lr * (unclipped - target))


def effective_noise(update_noise: float, count_stddev: float | None) -> float:
    """The single Gaussian noise multiplier equivalent to releasing the clipped sum with
    ``update_noise`` and (adaptive clipping) the unclipped count with ``count_stddev``."""
    if not count_stddev:
        return update_noise
    return (update_noise**-2 + count_stddev**-2) ** -0.5
