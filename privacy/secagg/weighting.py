"""What a client masks and how the server turns the sum back into an average: pure functions
shared by both sides of secure aggregation.

A model update: the client masks its clipped update times its aggregation weight ``w``, and
``w`` itself, all over ``W = secagg.max-weight`` (so every entry stays within the clipping
range); the server divides the sums. An algorithm's statistics (:mod:`fedcore.statistics`)
carry their own weights and bounds; only their encoding range is decided here
(:func:`statistics_bound`).
"""

from __future__ import annotations

import math

import numpy as np
from flwr.app import ArrayRecord

from fedcore.arrays import to_numpy
from fedcore.config import RunConfig
from privacy.plan import dp_plan, local_noise
from privacy.secagg.quantize import input_bound


def weighted_input(update: np.ndarray, weight: float, cfg: RunConfig) -> np.ndarray:
    """What a client masks, all over ``W = secagg.max-weight``: ``w * clip(update)`` followed
    by ``w``, so that the server can divide the sums. Client-level DP weighs every client
    alike (``w = W``), as its sensitivity analysis assumes."""
    s = cfg.secagg
    finite = np.isfinite(update)
    if not finite.all():  # before the clip below, which would pass infinity off as the bound
        raise ValueError(
            f"{update.size - np.count_nonzero(finite)} of {update.size} update entries are "
            "not finite (the update diverged)"
        )
    if cfg.privacy.dp in ("client", "distributed"):
        weight = s.max_weight
    if weight > s.max_weight:
        raise ValueError(f"client weight {weight:g} exceeds secagg.max-weight {s.max_weight:g}")
    out = np.empty(len(update) + 1)
    body = out[:-1]
    np.clip(update, -s.bound, s.bound, out=body)
    body *= weight
    out[-1] = weight
    out /= s.max_weight
    return out


def masked_length(model: ArrayRecord) -> int:
    """The length of what every client masks for ``model`` (:func:`weighted_input`): the
    flat update and the weight."""
    return sum(to_numpy(a).size for a in model.values()) + 1


def average_of_sum(model: ArrayRecord, total: np.ndarray, cfg: RunConfig) -> np.ndarray:
    """The flat step of the model from the unmasked sum of :func:`weighted_input`: the
    weighted mean update (client-level DP: the sum, which the DP strategy divides)."""
    expected = masked_length(model)
    if len(total) != expected:
        raise ValueError(f"the unmasked sum has {len(total)} entries, expected {expected}")
    body, weight = total[:-1], total[-1]
    if weight <= 0:
        raise ValueError("the unmasked total weight is not positive")
    return body if cfg.privacy.dp in ("client", "distributed") else body / weight


def statistics_bound(spec_bound: float, cfg: RunConfig) -> float:
    """The encoding range of an algorithm's wire vector (:mod:`fedcore.statistics`): its
    spec's bound, at least 1; under distributed and local DP the clipped vector (entries at
    most the clip norm) plus 8 standard deviations of the noise the client adds before
    masking (its share, or all of it), so the clip in the encoding does not cut the noise."""
    if not math.isfinite(spec_bound):
        raise ValueError(
            "secure aggregation needs a finite bound on every statistic; the algorithm's spec "
            "declares none"
        )
    p = cfg.privacy
    if p.dp == "distributed":
        std = dp_plan(cfg).client_noise_std(p.clip_norm)
    elif p.dp == "local":  # the whole noise, added before masking
        std = local_noise(cfg) * p.clip_norm
    else:
        return input_bound(spec_bound)
    return input_bound(min(spec_bound, p.clip_norm) + 8 * std)
