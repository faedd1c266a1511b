"""Shamir t-of-n secret sharing of 32-byte secrets, vectorized over GF(2^31 - 1).

A secret (a key or a seed) is cut into nine 30-bit limbs, each an element of the Mersenne
prime field p = 2^31 - 1, and every limb is shared with its own random polynomial. A share is
the vector of the nine evaluations. With p < 2^31 every product fits in 64 bits, so sharing
is Horner's rule on numpy arrays over (points x limbs) at once, with no per-byte or per-point
Python loop; reconstruction is a Lagrange interpolation at zero with the weights computed once
per set of points. Coefficients come from the operating system's CSPRNG (a seeded generator
would make the shares predictable), drawn uniformly by rejection sampling.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence

import numpy as np

PRIME = 2**31 - 1
SECRET_BYTES = 32
LIMB_BITS = 30
LIMBS = -(-8 * SECRET_BYTES // LIMB_BITS)  # 9 limbs of 30 bits hold 256 bits
SHARE_BYTES = 4 * LIMBS

Share = np.ndarray  # LIMBS field elements, uint64


def _limbs(secret: bytes) -> np.ndarray:
    value = int.from_bytes(secret, "big")
    mask = (1 << LIMB_BITS) - 1
    return np.array([(value >> (LIMB_BITS * i)) & mask for i in range(LIMBS)], np.uint64)


def _from_limbs(limbs: np.ndarray) -> bytes:
    if np.any(limbs >> LIMB_BITS):
        raise ValueError("shares are inconsistent: a limb is out of range")
    value = sum(int(v) << (LIMB_BITS * i) for i, v in enumerate(limbs))
    if value >> (8 * SECRET_BYTES):
        raise ValueError("shares are inconsistent: the value is longer than a secret")
    return value.to_bytes(SECRET_BYTES, "big")


def _random_field(shape: tuple[int, ...]) -> np.ndarray:
    """Uniform field elements from the OS CSPRNG, by rejection sampling: 31 random bits are
    kept when they are below p and drawn again otherwise (only 2^31 - 1 itself is rejected),
    so every element of GF(p) is exactly equally likely; a reduction mod p would not be."""
    count = int(np.prod(shape))
    out = np.empty(0, np.uint64)
    while len(out) < count:
        need = count - len(out)
        words = np.frombuffer(os.urandom(4 * need), "<u4").astype(np.uint64) & np.uint64(PRIME)
        out = np.concatenate([out, words[words < PRIME]])
    return out.reshape(shape)


def share(secret: bytes, threshold: int, xs: Sequence[int]) -> dict[int, Share]:
    """Shares of ``secret`` at the points ``xs`` (distinct, in 1..p-1); any ``threshold`` of
    them reconstruct it, fewer reveal nothing about it."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"a secret is {SECRET_BYTES} bytes, got {len(secret)}")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold must be in 1..{len(xs)}, got {threshold}")
    if len(set(xs)) != len(xs) or not all(0 < x < PRIME for x in xs):
        raise ValueError("share points must be distinct and in 1..p-1")
    points = np.asarray(xs, np.uint64)[:, None]
    coefficients = _random_field((threshold - 1, LIMBS))  # highest degree first
    y = np.zeros((len(xs), LIMBS), np.uint64)
    for c in coefficients:
        y = (y * points + c) % PRIME
    y = (
        (y * points + _limbs(secret)) % PRIME
        if threshold > 1
        else np.broadcast_to(_limbs(secret), y.shape).copy()
    )
    return {int(x): y[i] for i, x in enumerate(xs)}


@functools.lru_cache(maxsize=256)  # one cohort's holder sets repeat for every owner
def _lagrange_at_zero(xs: tuple[int, ...]) -> np.ndarray:
    weights = []
    for i, xi in enumerate(xs):
        numerator, denominator = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                numerator = numerator * (-xj) % PRIME
                denominator = denominator * (xi - xj) % PRIME
        weights.append(numerator * pow(denominator, -1, PRIME) % PRIME)
    out = np.asarray(weights, np.uint64)
    out.setflags(write=False)
    return out


def reconstruct(shares: Mapping[int, Share], threshold: int) -> bytes:
    """The secret from at least ``threshold`` shares ``{x: share}`` (the ``threshold`` with
    the smallest x are used); ValueError if they cannot be a sharing of a 32-byte secret."""
    if len(shares) < threshold:
        raise ValueError(f"{len(shares)} shares cannot reconstruct a {threshold}-of-n secret")
    chosen = sorted(shares.items())[:threshold]
    weights = _lagrange_at_zero(tuple(x for x, _ in chosen))
    limbs = np.zeros(LIMBS, np.uint64)
    for w, (_, s) in zip(weights, chosen, strict=True):
        limbs = (limbs + w * np.asarray(s, np.uint64)) % PRIME
    return _from_limbs(limbs)


def to_bytes(s: Share) -> bytes:
    return np.asarray(s, ">u4").tobytes()


def from_bytes(data: bytes) -> Share:
    if len(data) != SHARE_BYTES:
        raise ValueError(f"a share is {SHARE_BYTES} bytes, got {len(data)}")
    s = np.frombuffer(data, ">u4").astype(np.uint64)
    if np.any(s >= PRIME):
        raise ValueError("a share element is outside the field")
    return s


def many_from_bytes(data: bytes, count: int) -> np.ndarray:
    """``count`` concatenated shares (as :func:`to_bytes` writes them), shape (count, LIMBS)."""
    if len(data) != count * SHARE_BYTES:
        raise ValueError(f"{len(data)} bytes cannot hold {count} shares")
    s = np.frombuffer(data, ">u4").astype(np.uint64).reshape(count, LIMBS)
    if np.any(s >= PRIME):
        raise ValueError("a share element is outside the field")
    return s
