"""The encoding range of what a client masks: an algorithm's wire vector
(:mod:`fedcore.statistics`) carries its own weights and bounds; the fixed-point range adds
room for the DP noise a client adds before masking."""

from __future__ import annotations

import math

from fedcore.config import RunConfig
from privacy.plan import dp_plan, local_noise
from privacy.secagg.quantize import input_bound


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
