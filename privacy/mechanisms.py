"""The Gaussian mechanism on wire vectors, as pure functions of arrays.

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
