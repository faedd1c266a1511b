"""What a client masks, in the encoding's terms: an algorithm's wire vector
(:mod:`fedcore.statistics`) carries its own weights and bounds; the fixed-point range adds
room for the DP noise a client adds before masking.

Counts enter the encoding as whole units: where the sum is exact (no client-level DP, whose
clip and noise make counts real), an integer array's entry ``k`` goes on the wire as
``k * 2^-f`` (:func:`to_encoding`), which the fixed-point encoding turns into exactly ``k``
(``floor(k + u) = k``: no rounding), and the server multiplies the unmasked sum back
(:func:`from_encoding`). So counts are summed exactly, and a count's bound (FedAvg's
``secagg.max-weight``, 10^4) costs the encoding ``bound * 2^-f`` of range, not ``bound``:
FedAvg's updates keep the 32-bit modulus of a range of 1.
"""

from __future__ import annotations

import math

import numpy as np

from fedcore.config import CLIENT_LEVEL_DP, RunConfig
from fedcore.statistics import INTEGER, Spec
from privacy.plan import dp_plan, local_noise
from privacy.secagg.quantize import input_bound, quantized_frac_bits


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


def encoding_bits(cfg: RunConfig, bound: float) -> tuple[int, int]:
    """The round's encoding of ``[-bound, bound]``: its fraction bits and the smallest
    modulus it may use. ``secagg.frac-bits`` in 2^32 or more; under
    ``compression.uplink = "qsgd"`` a ``compression.bits``-bit encoding
    (:func:`~privacy.secagg.quantize.quantized_frac_bits`: QSGD's levels on one public
    scale) in the smallest modulus, from 2^16, that holds the cohort's sum."""
    if cfg.compression.uplink == "qsgd":
        return quantized_frac_bits(bound, cfg.compression.bits), 16
    return cfg.secagg.frac_bits, 32


def _units(spec: Spec, cfg: RunConfig) -> np.ndarray | None:
    """Per wire entry, what it is divided by on the way into the encoding: ``2^f`` for an
    integer array's entries where the sum is exact, else 1; None where nothing is scaled."""
    if cfg.privacy.dp in CLIENT_LEVEL_DP or not any(a.kind == INTEGER for _, a in spec.arrays):
        return None
    unit = float(2**cfg.secagg.frac_bits)
    return np.concatenate(
        [np.full(a.size, unit if a.kind == INTEGER else 1.0) for _, a in spec.arrays]
    )


def wire_bound(spec: Spec, cfg: RunConfig) -> float:
    """The largest entry of a wire vector once :func:`to_encoding` scaled its counts."""
    if _units(spec, cfg) is None:
        return spec.bound
    unit = float(2**cfg.secagg.frac_bits)
    return max(a.bound / unit if a.kind == INTEGER else a.bound for _, a in spec.arrays)


def to_encoding(wire: np.ndarray, spec: Spec, cfg: RunConfig) -> np.ndarray:
    """The wire vector as the client masks it: its counts in units of ``2^-f``."""
    units = _units(spec, cfg)
    return wire if units is None else wire / units


def from_encoding(total: np.ndarray, spec: Spec, cfg: RunConfig) -> np.ndarray:
    """The unmasked sum back in the wire vector's terms: its counts multiplied back."""
    units = _units(spec, cfg)
    return total if units is None else total * units
