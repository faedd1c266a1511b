"""Vertical (column-partitioned) matrix products by two-party secret sharing, and vertical
ridge regression on them.

Two parties hold different features of the same records: party A the columns ``A``
(n x d_a), party B the columns ``B`` (n x d_b) and, for regression, the targets ``y`` (as the
"guest" of FATE's hetero linear regression). The cross product ``A^T B`` is computed with a
Beaver triple dealt by a third party, in the ring ``Z_{2^64}`` on fixed-point encodings:

1. dealer: uniform ``U`` (n x d_a), ``V`` (n x d_b) and ``Z_A``; ``Z_B = U^T V - Z_A``.
   It sends A the seed ``U`` and ``Z_A`` expand from, B the seed of ``V`` and ``Z_B``.
2. A sends ``E = A - U`` to B; B sends ``F = B - V`` to A (one-time pads: uniform, so
   each reveals nothing about its input).
3. A computes ``C_A = A^T F + Z_A``; B computes ``C_B = E^T V + Z_B``. Then
   ``C_A + C_B = A^T (B - V) + (A - U)^T V + U^T V = A^T B``: additive shares of the
   product, each uniform on its own.

This is the Beaver matrix triple with the inputs shared as ``(A, 0)`` and ``(0, B)``: since
each input is held whole by one party, one masked matrix per party and two local products
suffice. The encoding: a value ``x`` is ``round(x 2^f)`` mod ``2^64`` (two's complement); a
product of two encodings carries ``2^(2f)``, and ``f`` is the largest that cannot overflow
``2^63`` for the public bounds (:func:`frac_bits_for`). Ring products are exact: 64-bit
words are split into 16-bit limbs whose products float64 BLAS sums without rounding
(:func:`ring_matmul`), 100x faster than numpy's integer matmul.

Vertical ridge (:func:`vertical_ridge`): A's and B's own blocks of the Gram matrix
(``A^T A``, ``B^T B``, ``B^T y``, the column sums) are local; ``A^T [B y]`` is the secure
product. The parties open its shares to each other and each solves the pooled ridge system.

Threat model (written down, as the issue asks):

- semi-honest parties: A, B and the dealer follow the protocol but may try to learn from
  what they see; an actively cheating party is not detected (no MACs on the shares).
- the dealer does not collude with either party: it knows ``U``, ``V`` and so, with A's
  view, B's ``F`` would give B's columns. It sees no data and no message of the protocol.
- record linkage is assumed done: both parties' rows are the same records in the same order
  (private set intersection is not part of this module).
- what is revealed: the output, and what it determines: with no more records than a party
  has columns the opened product would give away the other party's columns, so the
  protocol refuses such inputs (more records than columns are needed). Opened,
  ``A^T [B y]`` together with the local blocks is the pooled Gram matrix and ``X^T y`` of
  the joined data, which both parties learn (as the server learns them in the horizontal
  task) with the coefficients; no row of the other party's data is sent, in the clear or
  otherwise. The fixed-point encoding rounds each
  value to ``2^-f``, a loss of precision (:func:`product_error_bound`), not of privacy.
- randomness: the masks expand from the dealer's 32-byte seeds by AES-256-CTR, the PRG of
  secure aggregation's masks (:class:`privacy.secagg.crypto.MaskExpander`); the seeds come
  from the OS CSPRNG (``secrets``), or from a generator a test passes for reproducibility.

Everything runs in one process (:func:`secure_product` is the protocol driver): the messages
are the arrays passed between the parties' functions, and their bytes are counted. The
Flower engines do not run this protocol (their rounds are a server and a cohort, not two
peers and a dealer).
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field

import numpy as np

from fedcore.tasks.linear import products
from privacy.secagg.crypto import MaskExpander

RING_BITS = 64
LIMB_BITS = 16
_LIMBS = RING_BITS // LIMB_BITS
_CHUNK_ROWS = 1 << (53 - 2 * LIMB_BITS)  # limb products summed over these rows stay exact


def frac_bits_for(rows: int, a_bound: float, b_bound: float) -> int:
    """The most fraction bits ``f`` for which an entry of ``A^T B`` (at most ``rows *
    a_bound * b_bound`` in absolute value, plus its rounding) times ``2^(2f)`` stays below
    ``2^62``, a bit of headroom under the ring's ``2^63``; ValueError if none does."""
    largest = rows * (a_bound + 1) * (b_bound + 1)
    f = math.floor((62 - math.log2(largest)) / 2)
    if f < 1:
        raise ValueError(
            f"a product of {rows} rows with entries within {a_bound:g} and {b_bound:g} "
            "does not fit a 64-bit ring with any fixed-point precision"
        )
    return min(f, 26)  # 2f <= 52: the decoded float64 holds no more precision than that


def encode(x: np.ndarray, frac_bits: int) -> np.ndarray:
    """``round(x 2^f)`` as an element of ``Z_{2^64}`` (uint64, two's complement)."""
    return np.rint(np.asarray(x, np.float64) * 2.0**frac_bits).astype(np.int64).view(np.uint64)


def decode(z: np.ndarray, scale_bits: int) -> np.ndarray:
    """The real number a ring element encodes with ``scale_bits`` fraction bits (``2f`` for
    a product of two encodings)."""
    return np.asarray(z, np.uint64).view(np.int64).astype(np.float64) / 2.0**scale_bits


def product_error_bound(rows: int, a_bound: float, b_bound: float, frac_bits: int) -> float:
    """The largest ``|decoded - exact|`` of an entry of ``A^T B``: each encoding rounds by at
    most ``2^-(f+1)``, so an entry moves by ``rows (a_bound + b_bound) 2^-(f+1) +
    rows 2^-(2f+2)``; the decoded int64 loses at most a relative ``2^-53`` to float64."""
    rounding = rows * (a_bound + b_bound) * 2.0 ** -(frac_bits + 1) + rows * 2.0 ** -(
        2 * frac_bits + 2
    )
    return rounding + rows * a_bound * b_bound * 2.0**-52


def uniform(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Uniform elements of ``Z_{2^64}``: one-time pads and shares."""
    return rng.integers(0, 2**64, size=shape, dtype=np.uint64, endpoint=False)


def ring_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a^T b`` mod ``2^64`` for uint64 matrices, exactly: each word is four 16-bit limbs;
    the limb products below the ring's top (``i + j < 4``) are summed by float64 BLAS, exact
    because every partial sum of at most ``2^21`` products of ``2^32`` stays below ``2^53``
    (rows are taken in chunks of that many), and shifted into place with uint64 wrap-around."""
    a, b = np.asarray(a, np.uint64), np.asarray(b, np.uint64)
    if a.ndim != 2 or b.ndim != 2 or len(a) != len(b):
        raise ValueError(f"a^T b needs matrices with the same rows, got {a.shape} and {b.shape}")
    mask = np.uint64((1 << LIMB_BITS) - 1)
    out = np.zeros((a.shape[1], b.shape[1]), np.uint64)
    cols = b.shape[1]
    for start in range(0, len(a), _CHUNK_ROWS):
        rows = slice(start, start + _CHUNK_ROWS)
        a_limbs = [
            ((a[rows] >> np.uint64(LIMB_BITS * i)) & mask).astype(np.float64) for i in range(_LIMBS)
        ]
        b_limbs = np.concatenate(
            [
                ((b[rows] >> np.uint64(LIMB_BITS * j)) & mask).astype(np.float64)
                for j in range(_LIMBS)
            ],
            axis=1,
        )
        for i in range(_LIMBS):
            width = (_LIMBS - i) * cols  # limbs j = 0 .. 3 - i of b
            partial = (a_limbs[i].T @ b_limbs[:, :width]).astype(np.uint64)
            for j in range(_LIMBS - i):
                out += partial[:, j * cols : (j + 1) * cols] << np.uint64(LIMB_BITS * (i + j))
    return out


# -- the protocol ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Deal:
    """The dealer's message to one party: the 32-byte seed its uniform masks expand from
    (AES-256-CTR), and for party B its share ``Z_B`` of ``U^T V`` in full. Uniform
    matrices need not be sent: a seed is enough, so the dealer sends 32 bytes to A and
    ``d_a d_b`` words (and 32 bytes) to B, not the ``n (d_a + d_b)`` words of ``U`` and
    ``V``."""

    seed: np.ndarray
    z: np.ndarray | None = None


@dataclass(frozen=True)
class TripleA:
    """Party A's part of the triple: its mask ``U`` and its share ``Z_A`` of ``U^T V``."""

    u: np.ndarray
    z: np.ndarray


@dataclass(frozen=True)
class TripleB:
    """Party B's part of the triple: its mask ``V`` and its share ``Z_B`` of ``U^T V``."""

    v: np.ndarray
    z: np.ndarray


def _expand(seed: np.ndarray, *shapes: tuple[int, int]) -> list[np.ndarray]:
    """Uniform ring matrices of ``shapes`` from a 32-byte seed: the AES-256-CTR keystream,
    read as uint64 words, in order."""
    sizes = [math.prod(shape) for shape in shapes]
    words = MaskExpander(sum(sizes), np.uint64)(seed.tobytes()).copy()
    ends = np.cumsum(sizes)
    return [w.reshape(shape) for w, shape in zip(np.split(words, ends[:-1]), shapes, strict=True)]


def expand_a(deal: Deal, rows: int, cols_a: int, cols_b: int) -> TripleA:
    """Party A's ``U`` (n x d_a) and ``Z_A`` (d_a x d_b) from the dealer's seed."""
    return TripleA(*_expand(deal.seed, (rows, cols_a), (cols_a, cols_b)))


def expand_b(deal: Deal, rows: int, cols_b: int) -> TripleB:
    """Party B's ``V`` (n x d_b) from the dealer's seed, and ``Z_B`` as sent."""
    (v,) = _expand(deal.seed, (rows, cols_b))
    return TripleB(v, deal.z)


def _new_seed(rng: np.random.Generator | None) -> np.ndarray:
    """32 bytes from the OS CSPRNG, or from ``rng`` (tests: reproducible)."""
    raw = secrets.token_bytes(32) if rng is None else rng.bytes(32)
    return np.frombuffer(raw, np.uint8)


def deal(
    rows: int, cols_a: int, cols_b: int, rng: np.random.Generator | None = None
) -> tuple[Deal, Deal]:
    """The dealer's messages to A and B for a product ``A^T B`` (n x d_a by n x d_b): seeds
    of ``(U, Z_A)`` and of ``V``, and ``Z_B = U^T V - Z_A``. The seeds come from the OS
    CSPRNG unless a test passes ``rng``."""
    seed_a, seed_b = _new_seed(rng), _new_seed(rng)
    triple_a = expand_a(Deal(seed_a), rows, cols_a, cols_b)
    v = expand_b(Deal(seed_b), rows, cols_b).v
    return Deal(seed_a), Deal(seed_b, ring_matmul(triple_a.u, v) - triple_a.z)


def mask(x: np.ndarray, pad: np.ndarray) -> np.ndarray:
    """A party's input under its one-time pad (``E = A - U`` or ``F = B - V``): uniform."""
    return x - pad


def share_a(a: np.ndarray, f: np.ndarray, triple: TripleA) -> np.ndarray:
    """Party A's share of ``A^T B``: ``A^T F + Z_A``."""
    return ring_matmul(a, f) + triple.z


def share_b(e: np.ndarray, triple: TripleB) -> np.ndarray:
    """Party B's share of ``A^T B``: ``E^T V + Z_B``."""
    return ring_matmul(e, triple.v) + triple.z


@dataclass
class Traffic:
    """Bytes sent, by (sender, receiver)."""

    bytes: dict[tuple[str, str], int] = field(default_factory=dict)

    def send(self, sender: str, receiver: str, *arrays: np.ndarray) -> None:
        key = (sender, receiver)
        self.bytes[key] = self.bytes.get(key, 0) + sum(int(x.nbytes) for x in arrays)

    @property
    def total(self) -> int:
        return sum(self.bytes.values())


@dataclass(frozen=True)
class Product:
    """A secure product's result: the opened ``A^T B``, its encoding's error bound and the
    fraction bits it used."""

    value: np.ndarray
    error_bound: float
    frac_bits: int


def secure_product(
    a: np.ndarray,
    b: np.ndarray,
    *,
    a_bound: float,
    b_bound: float,
    dealer_rng: np.random.Generator | None = None,
    traffic: Traffic | None = None,
    frac_bits: int | None = None,
) -> Product:
    """``A^T B`` by the protocol of the module docstring, run in process, both shares opened
    to both parties. ``a_bound`` and ``b_bound`` are public bounds on the entries (checked:
    ValueError beyond them); the dealer's seeds come from the OS CSPRNG, or from
    ``dealer_rng`` (tests). Messages are counted in ``traffic``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or len(a) != len(b):
        raise ValueError(
            f"A (n x d_a) and B (n x d_b) need the same rows, got {a.shape}, {b.shape}"
        )
    rows = len(a)
    if rows <= max(a.shape[1], b.shape[1]):
        raise ValueError(
            f"{rows} records for {a.shape[1]} and {b.shape[1]} columns: with no more records "
            "than a party has columns, the opened product A^T B determines the other party's "
            "columns (solve the linear system); the protocol needs more records than columns"
        )
    for name, x, bound in (("A", a, a_bound), ("B", b, b_bound)):
        if not np.isfinite(x).all():
            raise ValueError(f"{name} has entries that are not finite")
        if np.abs(x).max(initial=0) > bound:
            raise ValueError(
                f"{name} has an entry of {np.abs(x).max():g}, beyond its bound {bound:g}"
            )
    most = frac_bits_for(rows, a_bound, b_bound)
    if frac_bits is not None and not 1 <= frac_bits <= most:
        raise ValueError(
            f"frac_bits = {frac_bits}: a product of {rows} records within {a_bound:g} and "
            f"{b_bound:g} fits the 64-bit ring with 1 to {most} fraction bits"
        )
    f = most if frac_bits is None else frac_bits
    traffic = Traffic() if traffic is None else traffic
    deal_a, deal_b = deal(rows, a.shape[1], b.shape[1], dealer_rng)
    traffic.send("dealer", "A", deal_a.seed)
    traffic.send("dealer", "B", deal_b.seed, deal_b.z)
    to_a = expand_a(deal_a, rows, a.shape[1], b.shape[1])
    to_b = expand_b(deal_b, rows, b.shape[1])
    a_ring, b_ring = encode(a, f), encode(b, f)
    e = mask(a_ring, to_a.u)
    traffic.send("A", "B", e)
    f_masked = mask(b_ring, to_b.v)
    traffic.send("B", "A", f_masked)
    c_a, c_b = share_a(a_ring, f_masked, to_a), share_b(e, to_b)
    traffic.send("A", "B", c_a)  # opening: each party learns the product
    traffic.send("B", "A", c_b)
    value = decode(c_a + c_b, 2 * f)
    return Product(value, product_error_bound(rows, a_bound, b_bound, f), f)


@dataclass(frozen=True)
class VerticalFit:
    """Vertical ridge's result: A's and B's coefficients, the intercept, the secure
    product it used and the bytes sent."""

    coef_a: np.ndarray
    coef_b: np.ndarray
    intercept: float
    cross: Product
    traffic: Traffic


def vertical_ridge(
    a: np.ndarray,
    b: np.ndarray,
    y: np.ndarray,
    alpha: float,
    *,
    a_bound: float,
    b_bound: float,
    fit_intercept: bool = True,
    dealer_rng: np.random.Generator | None = None,
    frac_bits: int | None = None,
) -> VerticalFit:
    """Ridge regression of ``y`` (party B's) on ``[A B]`` (A's and B's columns of the same
    records): the local Gram blocks, the secure product ``A^T [B y]`` (``b_bound`` bounds
    ``B`` and ``y`` alike), then the pooled system of :func:`products.ridge`, which both
    parties solve on the opened statistics. Equals ridge on the joined data within the
    product's encoding bound."""
    a, b, y = (np.asarray(v, np.float64) for v in (a, b, y))
    traffic = Traffic()
    cross = secure_product(
        a,
        np.column_stack([b, y]),
        a_bound=a_bound,
        b_bound=b_bound,
        dealer_rng=dealer_rng,
        traffic=traffic,
        frac_bits=frac_bits,
    )
    d_a, d_b = a.shape[1], b.shape[1]
    a_b, a_y = cross.value[:, :d_b], cross.value[:, d_b]
    gram = np.block([[a.T @ a, a_b], [a_b.T, b.T @ b]])
    xty = np.concatenate([a_y, b.T @ y])
    # the local blocks each party opens to the other, so both can solve
    traffic.send("A", "B", products.pack(a.T @ a), a.sum(axis=0))
    traffic.send("B", "A", products.pack(b.T @ b), b.T @ y, b.sum(axis=0), y.sum(keepdims=True))
    if fit_intercept:
        sums = np.concatenate([a.sum(axis=0), b.sum(axis=0)])
        coef, intercept = products.ridge(
            gram, xty, alpha, rows=float(len(y)), feature_sums=sums, target_sum=float(y.sum())
        )
    else:
        coef, intercept = products.ridge(gram, xty, alpha)
    return VerticalFit(coef[:d_a], coef[d_a:], intercept, cross, traffic)
