"""Compressors for one client's wire vector, as pure functions on numpy arrays.

Each compressor turns a 1-D float64 vector into a :class:`Compressed`: a few small numpy
arrays (what travels) and :func:`decode` turns them back into a float64 vector of the same
length. The methods:

- ``qsgd``: stochastic ``b``-bit quantization with one scale per block, unbiased
  (Alistarh et al. 2017, "QSGD: Communication-Efficient SGD via Gradient Quantization");
- ``topk``: the ``k`` entries of largest magnitude (Stich et al. 2018, "Sparsified SGD with
  Memory");
- ``randk``: ``k`` entries drawn uniformly, not rescaled (biased: meant for error feedback);
- ``sign``: scaled signs, one bit per entry and the mean magnitude per block (Karimireddy et
  al. 2019, "Error Feedback Fixes SignSGD and other Gradient Compression Schemes").

:func:`with_error_feedback` keeps what a compressor left out and adds it to the next vector
(Seide et al. 2014, "1-Bit SGD"; Stich et al. 2018; Karimireddy et al. 2019).
:func:`to_arrays` / :func:`from_arrays` are the wire form (the arrays plus an int64
``header``). :func:`decode` and :func:`from_arrays` read what a possibly malicious client
sent: anything malformed raises :class:`CompressionError` naming the problem.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

QSGD, TOPK, RANDK, SIGN = "qsgd", "topk", "randk", "sign"
METHODS = (QSGD, TOPK, RANDK, SIGN)
_CODES = {QSGD: 1, TOPK: 2, RANDK: 3, SIGN: 4}  # the header's method code
HEADER = "header"  # to_arrays: int64 [method code, size, bits, block]
MAX_SIZE = 2**32  # indices travel as uint32
_PACKED_BITS = 4  # qsgd levels of at most this many bits are bit-packed
_FLOAT32_MAX = float(np.finfo(np.float32).max)

# the arrays each method carries, by name
_ARRAYS = {
    QSGD: ("levels", "scales"),
    TOPK: ("indices", "values"),
    RANDK: ("indices", "values"),
    SIGN: ("signs", "scales"),
}


class CompressionError(ValueError):
    """A compressed vector (or a compressor's input) that is malformed."""


@dataclass(frozen=True, eq=False)
class Compressed:
    """One client's compressed wire vector, as it travels: plain numpy arrays only (each
    becomes one Flower Array).

    Attributes:
        method: ``"qsgd"``, ``"topk"``, ``"randk"`` or ``"sign"``.
        size: the length of the original vector.
        arrays: what goes on the wire, in the smallest dtypes that hold it.
        bits: qsgd's bits per entry (its sign included); 0 for the other methods.
        block: qsgd's and sign's entries per scale (0: one scale for the whole vector);
            0 for topk and randk.
    """

    method: str
    size: int
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    bits: int = 0
    block: int = 0

    def nbytes(self) -> int:
        """The bytes of the arrays (the header of :func:`to_arrays` not included)."""
        return int(sum(a.nbytes for a in self.arrays.values()))


# --- helpers -----------------------------------------------------------------------------


def _vector(vector: np.ndarray) -> np.ndarray:
    """``vector`` as a finite 1-D float64 array whose entries a float32 can hold."""
    v = np.asarray(vector, dtype=np.float64)
    if v.ndim != 1:
        raise CompressionError(f"a compressor takes a 1-D vector, got shape {v.shape}")
    if v.size > MAX_SIZE:
        raise CompressionError(f"a vector of {v.size} entries exceeds {MAX_SIZE}")
    if not np.isfinite(v).all():
        raise CompressionError("the vector to compress has a non-finite entry")
    if v.size and np.abs(v).max() > _FLOAT32_MAX:
        raise CompressionError(
            f"the vector to compress has an entry beyond float32's range (+-{_FLOAT32_MAX:g})"
        )
    return v


def _int(value: object, name: str, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]``, or a CompressionError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise CompressionError(f"{name} must be an integer, got {value!r}")
    if not low <= int(value) <= high:
        raise CompressionError(f"{name} = {value} is outside [{low}, {high}]")
    return int(value)


def _blocks(size: int, block: int) -> int:
    """How many scales a vector of ``size`` entries has in blocks of ``block`` (0: one)."""
    if size == 0:
        return 0
    return 1 if block == 0 else -(-size // block)


def _block_view(v: np.ndarray, block: int) -> np.ndarray:
    """``v`` zero-padded to whole blocks, as a (blocks, entries per block) matrix."""
    width = v.size if block == 0 or block > v.size else block
    rows = _blocks(v.size, block)
    padded = np.zeros(rows * width)
    padded[: v.size] = v
    return padded.reshape(rows, width)


def _per_entry(scales: np.ndarray, size: int, block: int) -> np.ndarray:
    """Each entry's block scale, as float64."""
    return np.repeat(scales.astype(np.float64), min(block or size, size))[:size]


def _scale32(s: np.ndarray) -> np.ndarray:
    """``s`` as float32, rounded up so that the float32 scale still bounds its block."""
    s32 = s.astype(np.float32)
    low = s32.astype(np.float64) < s
    s32[low] = np.nextafter(s32[low], np.float32(np.inf))
    return s32


def _index_dtype(size: int) -> type:
    return np.uint16 if size <= 2**16 else np.uint32


def _pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """uint8 ``codes`` (each < 2**bits), ``bits`` bits each, packed into uint8 (first code in
    the high bits)."""
    if 8 % bits:  # 3 bits straddle bytes: go through single bits
        return np.packbits(np.unpackbits(codes[:, None], axis=1)[:, 8 - bits :])
    per = 8 // bits
    padded = np.zeros(-(-codes.size // per) * per, np.uint8)
    padded[: codes.size] = codes
    shifts = np.arange(8 - bits, -1, -bits, dtype=np.uint8)
    return np.bitwise_or.reduce(padded.reshape(-1, per) << shifts, axis=1).astype(np.uint8)


def _unpack(packed: np.ndarray, size: int, bits: int) -> np.ndarray:
    """The ``size`` codes of ``bits`` bits each that :func:`_pack` packed, as uint8."""
    if 8 % bits:
        flat = np.unpackbits(packed, count=size * bits).reshape(size, bits)
        return np.packbits(flat, axis=1).reshape(size) >> (8 - bits)
    shifts = np.arange(8 - bits, -1, -bits, dtype=np.uint8)
    mask = np.uint8(2**bits - 1)
    return ((packed[:, None] >> shifts) & mask).reshape(-1)[:size]


def _levels(bits: int) -> int:
    """QSGD's positive levels for ``bits >= 2``: values in ``-L .. L`` with ``L = 2^(b-1)-1``."""
    return 2 ** (bits - 1) - 1


def _levels_dtype(bits: int) -> type:
    if bits <= _PACKED_BITS:
        return np.uint8
    return np.int8 if bits <= 8 else np.int16


def _levels_length(size: int, bits: int) -> int:
    return -(-size * bits // 8) if bits <= _PACKED_BITS else size


# --- compressors -------------------------------------------------------------------------


def stochastic_round(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``x`` rounded to int64 without bias: ``floor(x) + Bernoulli(x - floor(x))``, so
    ``E[round(x)] = x`` (the integers a fixed-point encoding of a sum needs)."""
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        raise CompressionError("stochastic_round: a non-finite entry")
    if x.size and (x.min() < -(2.0**63) or x.max() >= 2.0**63):
        raise CompressionError("stochastic_round: an entry beyond int64's range")
    low = np.floor(x)
    up = rng.random(x.shape) < (x - low)
    return low.astype(np.int64) + up


def qsgd(vector: np.ndarray, bits: int, block: int, rng: np.random.Generator) -> Compressed:
    """Stochastic ``bits``-bit quantization (QSGD, Alistarh et al. 2017), unbiased:
    ``E[decode(qsgd(v))] = v``.

    Each block of ``block`` entries (0: the whole vector) has the scale ``s = max |v|``
    (float32, rounded up). For ``bits >= 2`` an entry becomes an integer level in
    ``-L .. L`` (``L = 2^(bits-1) - 1``): ``v L / s`` rounded stochastically to a
    neighbour, decoded as ``level s / L``. For ``bits = 1`` an entry becomes a sign,
    ``+s`` with probability ``(1 + v/s) / 2`` and ``-s`` otherwise, whose mean is ``v``.
    Levels travel as ``"levels"``: for ``bits <= 4`` as unsigned codes (``level + L``; for
    1 bit, 1 = ``+s``) bit-packed into uint8, so ``size * bits / 8`` bytes; otherwise as
    int8 (``bits <= 8``) or int16. Scales travel as float32 ``"scales"``.
    """
    v = _vector(vector)
    bits = _int(bits, "qsgd bits", 1, 16)
    block = _int(block, "qsgd block", 0, MAX_SIZE)
    grid = _block_view(np.abs(v), block)
    scales = _scale32(grid.max(axis=1) if grid.size else np.zeros(grid.shape[0]))
    s = _per_entry(scales, v.size, block)
    ratio = np.divide(v, s, out=np.zeros_like(v), where=s > 0)  # in [-1, 1]
    if bits == 1:
        codes = (rng.random(v.size) < (1 + ratio) / 2).astype(np.uint8)
        levels = _pack(codes, 1)
    else:
        top = _levels(bits)
        level = stochastic_round(np.clip(ratio * top, -top, top), rng)
        if bits <= _PACKED_BITS:
            levels = _pack((level + top).astype(np.uint8), bits)
        else:
            levels = level.astype(_levels_dtype(bits))
    return Compressed(QSGD, v.size, {"levels": levels, "scales": scales}, bits, block)


def _k(size: int, fraction: float) -> int:
    if isinstance(fraction, bool) or not isinstance(fraction, int | float | np.floating):
        raise CompressionError(f"fraction must be a number, got {fraction!r}")
    if not 0 < fraction <= 1:
        raise CompressionError(f"fraction = {fraction} is outside (0, 1]")
    return min(size, max(1, math.ceil(fraction * size)))


def _sparse(method: str, v: np.ndarray, indices: np.ndarray) -> Compressed:
    indices = np.sort(indices)
    arrays = {
        "indices": indices.astype(_index_dtype(v.size)),
        "values": v[indices].astype(np.float32),
    }
    return Compressed(method, v.size, arrays)


def topk(vector: np.ndarray, fraction: float) -> Compressed:
    """The ``k = max(1, ceil(fraction * size))`` entries of largest ``|v|`` (ties broken
    arbitrarily): ``"indices"`` (ascending; uint16 when ``size <= 65536``, else uint32)
    and their float32 ``"values"``."""
    v = _vector(vector)
    k = _k(v.size, fraction)
    if k == v.size:
        return _sparse(TOPK, v, np.arange(v.size))
    return _sparse(TOPK, v, np.argpartition(-np.abs(v), k - 1)[:k])


def randk(vector: np.ndarray, fraction: float, rng: np.random.Generator) -> Compressed:
    """``k = max(1, ceil(fraction * size))`` distinct entries drawn uniformly, as
    :func:`topk` sends them. The values are not rescaled by ``size / k``: biased, meant for
    error feedback (Stich et al. 2018), which the rescaling would only make noisier."""
    v = _vector(vector)
    k = _k(v.size, fraction)
    return _sparse(RANDK, v, rng.choice(v.size, size=k, replace=False))


def sign(vector: np.ndarray, block: int) -> Compressed:
    """Scaled signs (EF-signSGD, Karimireddy et al. 2019): one bit per entry, 1 for
    ``v >= 0`` (zero maps to +), packed 8 per byte as ``"signs"``, and per block of
    ``block`` entries (0: the whole vector) the scale ``mean |v|`` as float32 ``"scales"``;
    an entry decodes to ``+-scale``."""
    v = _vector(vector)
    block = _int(block, "sign block", 0, MAX_SIZE)
    grid = _block_view(np.abs(v), block)
    counts = np.full(grid.shape[0], grid.shape[1])
    if counts.size:
        counts[-1] = v.size - grid.shape[1] * (counts.size - 1)
    scales = (grid.sum(axis=1) / np.maximum(counts, 1)).astype(np.float32)
    signs = np.packbits(v >= 0)
    return Compressed(SIGN, v.size, {"signs": signs, "scales": scales}, block=block)


# --- decoding ----------------------------------------------------------------------------


def _array(c: Compressed, name: str, dtype: type, length: int | None) -> np.ndarray:
    """``c``'s array ``name``, checked to be 1-D of ``dtype`` (and ``length``)."""
    a = c.arrays[name]
    if not isinstance(a, np.ndarray):
        raise CompressionError(f"{c.method} array {name!r} is a {type(a).__name__}, not an array")
    if a.dtype != np.dtype(dtype) or a.ndim != 1:
        raise CompressionError(
            f"{c.method} array {name!r} must be 1-D {np.dtype(dtype)}, got {a.ndim}-D {a.dtype}"
        )
    if length is not None and a.size != length:
        raise CompressionError(
            f"{c.method} array {name!r} must have {length} entries, has {a.size}"
        )
    return a


def _scales(c: Compressed) -> np.ndarray:
    scales = _array(c, "scales", np.float32, _blocks(c.size, c.block))
    if not np.isfinite(scales).all() or (scales < 0).any():
        raise CompressionError(f"{c.method} scales must be finite and >= 0")
    return scales


def _check(c: Compressed) -> None:
    """Raise CompressionError unless ``c`` is a well-formed compressed vector."""
    if not isinstance(c, Compressed):
        raise CompressionError(f"expected a Compressed, got {type(c).__name__}")
    if c.method not in _ARRAYS:
        raise CompressionError(f"unknown compression method {c.method!r}; known: {METHODS}")
    _int(c.size, f"{c.method} size", 0, MAX_SIZE)
    bits_range = (1, 16) if c.method == QSGD else (0, 0)
    _int(c.bits, f"{c.method} bits", *bits_range)
    _int(c.block, f"{c.method} block", 0, MAX_SIZE if c.method in (QSGD, SIGN) else 0)
    if not isinstance(c.arrays, Mapping):
        raise CompressionError(f"{c.method} arrays must be a mapping of names to arrays")
    names, want = set(c.arrays), set(_ARRAYS[c.method])
    if names != want:
        raise CompressionError(
            f"{c.method} carries the arrays {sorted(want)}; "
            f"missing {sorted(want - names)}, extra {sorted(map(str, names - want))}"
        )


def _decode_qsgd(c: Compressed) -> np.ndarray:
    s = _per_entry(_scales(c), c.size, c.block)
    levels = _array(c, "levels", _levels_dtype(c.bits), _levels_length(c.size, c.bits))
    if c.bits == 1:
        return np.where(_unpack(levels, c.size, 1) == 1, s, -s)
    top = _levels(c.bits)
    if c.bits <= _PACKED_BITS:
        level = _unpack(levels, c.size, c.bits).astype(np.int64) - top
    else:
        level = levels.astype(np.int64)
    if c.size and np.abs(level).max() > top:
        raise CompressionError(f"qsgd {c.bits}-bit levels must lie in [-{top}, {top}]")
    return level * s / top


def _sparse_parts(c: Compressed) -> tuple[np.ndarray, np.ndarray]:
    """A topk / randk message's checked indices and values."""
    indices = _array(c, "indices", _index_dtype(c.size), None)
    values = _array(c, "values", np.float32, indices.size)
    if indices.size > c.size:
        raise CompressionError(f"{c.method}: {indices.size} indices for {c.size} entries")
    if indices.size and int(indices.max()) >= c.size:
        raise CompressionError(f"{c.method}: index {int(indices.max())} >= size {c.size}")
    if np.unique(indices).size != indices.size:
        raise CompressionError(f"{c.method}: an index is repeated")
    if not np.isfinite(values).all():
        raise CompressionError(f"{c.method}: a non-finite value")
    return indices, values


def _decode_sparse(c: Compressed) -> np.ndarray:
    indices, values = _sparse_parts(c)
    out = np.zeros(c.size)
    out[indices.astype(np.int64)] = values
    return out


def _decode_sign(c: Compressed) -> np.ndarray:
    s = _per_entry(_scales(c), c.size, c.block)
    signs = _array(c, "signs", np.uint8, -(-c.size // 8))
    return np.where(np.unpackbits(signs, count=c.size) == 1, s, -s)


def decode(c: Compressed) -> np.ndarray:
    """The float64 vector of length ``c.size`` that ``c`` encodes; CompressionError, naming
    the problem, for anything malformed (it decodes what a possibly malicious client sent).
    """
    _check(c)
    if c.method == QSGD:
        return _decode_qsgd(c)
    if c.method == SIGN:
        return _decode_sign(c)
    return _decode_sparse(c)


# --- error feedback and the wire form ----------------------------------------------------


def with_error_feedback(
    vector: np.ndarray,
    residual: np.ndarray | None,
    compress: Callable[[np.ndarray], Compressed],
) -> tuple[Compressed, np.ndarray]:
    """Error feedback (Seide et al. 2014; Stich et al. 2018; Karimireddy et al. 2019):
    compress ``vector + residual`` and keep what the compression left out as the next
    residual, so over many steps the decoded messages sum to the inputs' sum less the last
    residual. ``residual`` None means zeros. Returns ``(compressed, new residual)``."""
    v = _vector(vector)
    if residual is None:
        residual = np.zeros_like(v)
    residual = np.asarray(residual, dtype=np.float64)
    if residual.shape != v.shape:
        raise CompressionError(
            f"error feedback: a residual of shape {residual.shape} for a vector of {v.shape}"
        )
    corrected = v + residual
    c = compress(corrected)
    decoded = decode(c)
    if decoded.shape != v.shape:
        raise CompressionError(
            f"error feedback: the compressor returned {decoded.size} entries for {v.size}"
        )
    return c, corrected - decoded


def to_arrays(c: Compressed) -> dict[str, np.ndarray]:
    """``c``'s wire form: its arrays plus an int64 ``"header"`` ``[method code, size, bits,
    block]``, each one array of a Flower ArrayRecord."""
    _check(c)
    header = np.array([_CODES[c.method], c.size, c.bits, c.block], dtype=np.int64)
    return {**c.arrays, HEADER: header}


def from_arrays(arrays: Mapping[str, np.ndarray], *, size: int | None = None) -> Compressed:
    """The :class:`Compressed` that :func:`to_arrays` wrote, fully checked (CompressionError
    on anything wrong), so :func:`decode` accepts it. ``size``, when given, is the length
    the caller expects: checked before anything as large as the claimed size is made."""
    if not isinstance(arrays, Mapping):
        raise CompressionError(f"compressed arrays must be a mapping, got {type(arrays).__name__}")
    header = arrays.get(HEADER)
    if not isinstance(header, np.ndarray) or header.dtype != np.int64 or header.shape != (4,):
        raise CompressionError(f"compressed arrays need an int64 {HEADER!r} of 4 entries")
    code, n, bits, block = (int(x) for x in header)
    methods = {v: k for k, v in _CODES.items()}
    if code not in methods:
        raise CompressionError(f"unknown compression method code {code}")
    if size is not None and n != size:
        raise CompressionError(f"compressed vector of {n} entries, expected {size}")
    rest = {k: v for k, v in arrays.items() if k != HEADER}
    c = Compressed(methods[code], n, rest, bits, block)
    _check(c)
    if c.method in (TOPK, RANDK):
        _sparse_parts(c)  # without making the (claimed) full-length vector
    else:
        decode(c)  # its arrays' lengths follow from the size: no larger than the message
    return c
