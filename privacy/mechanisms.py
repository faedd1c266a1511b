"""The Gaussian mechanism on model updates, as pure functions of arrays.

Client-level DP (DP-FedAvg, McMahan et al. 2018) and local DP both clip an update
``w - w_global`` to an L2 norm and add Gaussian noise to it (local DP) or to the sum of the
clipped updates (central DP). Adaptive clipping (Andrew et al. 2021) also releases a noised
count of unclipped updates; the two releases compose into one Gaussian mechanism whose
effective noise multiplier is what the ledger records.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

Arrays = Mapping[str, np.ndarray]


def update_norm(arrays: Arrays, reference: Arrays) -> float:
    """The L2 norm of ``arrays - reference`` over all arrays together."""
    total = 0.0
    for name, a in arrays.items():
        diff = np.asarray(a, np.float64) - np.asarray(reference[name], np.float64)
        total += float(np.dot(diff.ravel(), diff.ravel()))
    return math.sqrt(total)


def clip_update(arrays: Arrays, reference: Arrays, clip_norm: float) -> tuple[dict, float]:
    """``reference + (arrays - reference) * min(1, clip_norm / norm)`` and the norm before
    clipping; dtypes are kept."""
    if not clip_norm > 0:
        raise ValueError(f"clip_norm must be > 0, got {clip_norm!r}")
    norm = update_norm(arrays, reference)
    scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    clipped = {
        name: (ref + scale * (np.asarray(arrays[name], np.float64) - ref)).astype(ref.dtype)
        for name, ref in ((n, np.asarray(r)) for n, r in reference.items())
    }
    return clipped, norm


def add_gaussian(arrays: Arrays, std: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``arrays`` plus independent N(0, std^2) noise on every entry, drawn from ``rng``."""
    if not (math.isfinite(std) and std >= 0):
        raise ValueError(f"noise std must be finite and >= 0, got {std!r}")
    return {
        name: (np.asarray(a, np.float64) + rng.normal(0.0, std, np.shape(a))).astype(
            np.asarray(a).dtype
        )
        for name, a in arrays.items()
    }


def privatize_update(
    arrays: Arrays,
    reference: Arrays,
    clip_norm: float,
    noise_multiplier: float,
    rng: np.random.Generator,
) -> tuple[dict[str, np.ndarray], float]:
    """Local DP on one update: clip ``arrays - reference`` to ``clip_norm`` and add
    N(0, (noise_multiplier * clip_norm)^2) noise, before anything leaves the client.
    Returns the released arrays and the update's norm before clipping."""
    if not noise_multiplier > 0:
        raise ValueError(f"noise_multiplier must be > 0, got {noise_multiplier!r}")
    clipped, norm = clip_update(arrays, reference, clip_norm)
    return add_gaussian(clipped, noise_multiplier * clip_norm, rng), norm


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
