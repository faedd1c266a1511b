"""Wire vectors and models as they travel compressed (``[compression]``).

A wire vector (:mod:`fedcore.statistics`) holds real entries (a model's weighted update) and
counts (FedAvg's number of examples). A count must arrive whole: the server checks it and
divides by it. So only the real entries go through a compressor (:mod:`fedcore.compression`)
and the integer ones travel as they are, beside it (``exact``). Error feedback keeps, on the
node, what the compressor left out of one update and adds it to the next
(:func:`fedcore.compression.with_error_feedback`); the residual is the caller's to keep.

The global model sent to the clients (downlink) is compressed array by array with QSGD
(:func:`pack_model`), one stochastic quantization per round that every client receives.

Every function here is pure; :func:`unpack` and :func:`unpack_model` read what a possibly
malicious peer sent, and raise :class:`~fedcore.compression.CompressionError` (a
``ValueError``) naming what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from fedcore import compression
from fedcore.compression import Compressed, CompressionError
from fedcore.config import CompressionConfig
from fedcore.statistics import INTEGER, Spec

EXACT = "exact"  # the wire vector's integer entries, uncompressed (float64)
_SEPARATOR = "/"  # model arrays: "<array name>/<compressed part>"


def compressor(
    c: CompressionConfig, rng: np.random.Generator
) -> Callable[[np.ndarray], Compressed]:
    """The uplink compressor ``c`` names, drawing its randomness from ``rng``."""
    if c.uplink == "qsgd":
        return lambda v: compression.qsgd(v, c.bits, c.block, rng)
    if c.uplink == "topk":
        return lambda v: compression.topk(v, c.fraction)
    if c.uplink == "randk":
        return lambda v: compression.randk(v, c.fraction, rng)
    if c.uplink == "sign":
        return lambda v: compression.sign(v, c.block)
    raise ValueError(f"compression.uplink = {c.uplink!r} compresses nothing")


def real_entries(spec: Spec) -> np.ndarray:
    """Which entries of ``spec``'s wire vector are real (compressed), as a boolean mask."""
    return np.concatenate(
        [np.full(a.size, a.kind != INTEGER) for _, a in spec.arrays] or [np.zeros(0, bool)]
    )


def pack(
    wire: np.ndarray,
    spec: Spec,
    c: CompressionConfig,
    rng: np.random.Generator,
    residual: np.ndarray | None,
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The arrays a compressed reply carries for ``wire``, and error feedback's new residual
    (None without error feedback). A residual of another length (the spec changed) is
    dropped: it belongs to other statistics."""
    real = real_entries(spec)
    values = wire[real]
    compress = compressor(c, rng)
    if c.error_feedback:
        if residual is not None and residual.shape != values.shape:
            residual = None
        packed, residual = compression.with_error_feedback(values, residual, compress)
    else:
        packed, residual = compress(values), None
    return {**compression.to_arrays(packed), EXACT: wire[~real].astype(np.float64)}, residual


def unpack(arrays: Mapping[str, np.ndarray], spec: Spec) -> np.ndarray:
    """The float64 wire vector a compressed reply's ``arrays`` decode to, for ``spec``."""
    arrays = dict(arrays)
    exact = arrays.pop(EXACT, None)
    real = real_entries(spec)
    if exact is None or exact.dtype != np.float64 or exact.shape != ((~real).sum(),):
        raise CompressionError(
            f"a compressed reply carries its {(~real).sum()} counts as a float64 array "
            f"{EXACT!r}; got {None if exact is None else (exact.dtype, exact.shape)}"
        )
    # (the expected length first: a forged header could claim 2^32 entries to allocate)
    values = compression.decode(compression.from_arrays(arrays, size=int(real.sum())))
    if values.shape != (real.sum(),):
        raise CompressionError(
            f"the compressed statistics decode to {values.size} entries, the spec has "
            f"{real.sum()} real ones"
        )
    wire = np.empty(spec.size)
    wire[real], wire[~real] = values, exact
    return wire


def pack_model(
    state: Mapping[str, np.ndarray], bits: int, block: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """The global model's arrays, each quantized by QSGD (unbiased), as one flat mapping."""
    out: dict[str, np.ndarray] = {}
    for name, array in state.items():
        if _SEPARATOR in name:
            raise ValueError(f"model array {name!r}: its name holds {_SEPARATOR!r}")
        flat = np.asarray(array, np.float64).reshape(-1)
        packed = compression.to_arrays(compression.qsgd(flat, bits, block, rng))
        out |= {f"{name}{_SEPARATOR}{part}": a for part, a in packed.items()}
        out[f"{name}{_SEPARATOR}shape"] = np.asarray(np.shape(array), np.int64)
    return out


def unpack_model(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model :func:`pack_model` compressed, as float32 arrays of their shapes."""
    parts: dict[str, dict[str, np.ndarray]] = {}
    for key, array in arrays.items():
        name, sep, part = key.rpartition(_SEPARATOR)
        if not sep or not name:
            raise CompressionError(f"compressed model array {key!r} names no model array")
        parts.setdefault(name, {})[part] = array
    model = {}
    for name, packed in parts.items():
        shape = packed.pop("shape", None)
        if shape is None or shape.dtype != np.int64 or shape.ndim != 1 or (shape < 0).any():
            raise CompressionError(f"compressed model array {name!r} has no valid shape")
        flat = compression.decode(compression.from_arrays(packed, size=int(np.prod(shape))))
        if flat.size != int(np.prod(shape)):
            raise CompressionError(
                f"compressed model array {name!r}: {flat.size} entries for shape "
                f"{tuple(shape.tolist())}"
            )
        model[name] = flat.reshape(tuple(int(n) for n in shape)).astype(np.float32)
    return model
