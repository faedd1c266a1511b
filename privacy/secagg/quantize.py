"""Fixed-point encoding of updates in Z_{2^k}, and the modulus that cannot overflow.

An update coordinate ``x`` clipped to ``[-bound, bound]`` becomes the integer
``floor(x * 2^f + u)`` with ``u ~ U[0, 1)`` (unbiased stochastic rounding: its expectation is
``x * 2^f``), stored modulo ``2^k`` in two's complement, so numpy's unsigned wrap-around is the
modular arithmetic. The sum over ``n`` clients stays within ``n * (bound * 2^f + 1)`` in
absolute value, which must be below ``2^(k-1)`` for the sum to decode; :func:`modulus_bits`
picks the smallest ``k`` in {32, 64} for which it is (in {16, 32, 64} for an encoding of few
bits, ``compression.uplink = "qsgd"``: the masked integers, and the round's uplink, are then
half the size), and refuses otherwise. The scaling is
done in float64, whose 52-bit mantissa must hold ``bound * 2^f`` with room for the dither: past
``2^52`` the spacing of doubles reaches 1, ``u`` is rounded away and the rounding is no longer
stochastic, so such an encoding is refused (:class:`PrecisionConfigError`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DTYPES = {16: np.uint16, 32: np.uint32, 64: np.uint64}
_SIGNED = {16: np.int16, 32: np.int32, 64: np.int64}


MAX_SCALED = 2**52  # float64 spacing is 1 from here on: the stochastic-rounding dither is lost


class OverflowConfigError(ValueError):
    """The configured cohort, bound and precision could overflow every available modulus."""


class PrecisionConfigError(ValueError):
    """``bound * 2^frac-bits`` exceeds what float64 scales with its rounding dither intact."""


def check_precision(bound: float, frac_bits: int) -> None:
    """:class:`PrecisionConfigError` if ``bound * 2^frac_bits > 2^52``."""
    if bound * 2.0**frac_bits > MAX_SCALED:
        raise PrecisionConfigError(
            f"secure aggregation's encoding would lose its stochastic rounding: bound {bound:g} "
            f"x 2^{frac_bits} = {bound * 2.0**frac_bits:.3g} > 2^52, beyond which float64 "
            "cannot hold the dither; lower secagg.frac-bits or secagg.bound"
        )


@dataclass(frozen=True)
class FixedPoint:
    """The encoding shared by all clients and the server of one round.

    Attributes:
        bound: every coordinate is clipped to ``[-bound, bound]`` before encoding.
        frac_bits: ``f``, the fixed-point fraction bits (resolution ``2^-f``).
        bits: ``k``, the modulus is ``2^k``.
    """

    bound: float
    frac_bits: int
    bits: int

    def __post_init__(self) -> None:
        if self.bits not in DTYPES:
            raise ValueError(f"the modulus is 2^16, 2^32 or 2^64, not 2^{self.bits}")
        check_precision(self.bound, self.frac_bits)

    @property
    def dtype(self) -> type[np.unsignedinteger]:
        return DTYPES[self.bits]

    @property
    def scale(self) -> float:
        return float(2**self.frac_bits)

    def error_bound(self, clients: int) -> float:
        """The largest possible |decoded sum - true sum| per coordinate for ``clients``
        clipped inputs: each rounding moves a value by less than one unit ``2^-f``."""
        return clients / self.scale


def modulus_bits(clients: int, bound: float, frac_bits: int, smallest: int = 32) -> int:
    """The smallest of 32 and 64 bits (``smallest = 16``: of 16, 32 and 64) whose modulus
    holds the sum of ``clients`` encoded values; :class:`OverflowConfigError` with the
    arithmetic if none does (and :class:`PrecisionConfigError` if float64 could not encode
    the values stochastically)."""
    if clients < 1 or not bound > 0 or frac_bits < 0:
        raise ValueError("clients >= 1, bound > 0 and frac_bits >= 0 are required")
    largest = clients * (math.ceil(bound * 2**frac_bits) + 1)
    for bits in [b for b in DTYPES if b >= smallest]:
        if largest < 2 ** (bits - 1):
            check_precision(bound, frac_bits)
            return bits
    raise OverflowConfigError(
        f"secure aggregation could overflow: {clients} clients x (bound {bound:g} x 2^"
        f"{frac_bits} + 1) = {largest:.3g} >= 2^63; lower secagg.frac-bits or secagg.bound"
    )


def input_bound(clip_bound: float) -> float:
    """The range of every masked entry: the clipped update (``secagg.bound``) and the weight
    entries, which are at most 1 once divided by ``secagg.max-weight``."""
    return max(clip_bound, 1.0)


def fixed_point(clients: int, bound: float, frac_bits: int, smallest: int = 32) -> FixedPoint:
    """The encoding for a cohort of at most ``clients`` (``smallest``: as
    :func:`modulus_bits`)."""
    return FixedPoint(bound, frac_bits, modulus_bits(clients, bound, frac_bits, smallest))


def quantized_frac_bits(bound: float, bits: int) -> int:
    """The fraction bits of a ``bits``-bit encoding of ``[-bound, bound]``, sign included:
    the largest ``f`` with ``bound * 2^f <= 2^(bits - 1) - 1`` (at least 0). The encoded
    values are then QSGD's levels with one public scale, ``2^-f``, that every client
    shares, so their masked sum is the sum of the quantized values exactly."""
    f = math.floor(math.log2((2 ** (bits - 1) - 1) / bound)) if bits > 1 else 0
    return max(0, f)


def encode(x: np.ndarray, fp: FixedPoint, rng: np.random.Generator) -> np.ndarray:
    """Clip ``x`` to the bound and round it stochastically to fixed point mod ``2^k``.

    Non-finite entries are refused (ValueError): NaN has no fixed-point value (cast, it is an
    arbitrary residue the sum would carry into the model) and clipping infinity to the bound
    would pass a diverged input off as a plausible one. (A client's statistics are checked
    earlier too, by :func:`fedcore.statistics.contribution`.)"""
    x = np.asarray(x, np.float64)
    finite = np.isfinite(x)
    if not finite.all():
        raise ValueError(
            f"secure aggregation input: {x.size - np.count_nonzero(finite)} of {x.size} "
            "entries are not finite (the update diverged); nothing was masked"
        )
    scaled = np.clip(x, -fp.bound, fp.bound)  # a new array
    scaled *= fp.scale
    scaled += rng.random(scaled.shape)
    np.floor(scaled, out=scaled)
    return scaled.astype(_SIGNED[fp.bits]).view(fp.dtype)


def decode(total: np.ndarray, fp: FixedPoint) -> np.ndarray:
    """The real-valued sum from a sum of encodings mod ``2^k`` (two's complement)."""
    return np.asarray(total, fp.dtype).view(_SIGNED[fp.bits]).astype(np.float64) / fp.scale
