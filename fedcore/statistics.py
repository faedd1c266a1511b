"""Statistics: what a client sends, typed, and the one vector every privacy layer works on.

A client's statistics are named arrays. Their :class:`Spec` (which the server derives from the
global state itself, never from a client's message) gives each array its shape, its kind
(``"real"`` or ``"integer"``), a public bound on every entry (``|x| <= bound``) and its
weight: none, or the name of another array of the statistics that weighs it, a scalar
(shape ``()``), one weight per row (a prefix of the shape) or one per entry (the same shape).

The server learns sums only: ``sum_i x_i`` for an unweighted array and ``sum_i w_i x_i`` for a
weighted one (its weight is summed as an array of its own), so the weighted mean is
``sum w x / sum w`` (:meth:`Summed.mean`). That is what FedAvg, per-item averaging, k-means
(per-cluster sums and counts), count tables and Gram matrices all need.

:func:`contribution` turns one client's statistics into its *wire vector*: the arrays in spec
order, reals clipped to their bound, integers checked (summed exactly, never clipped), and
each weighted array multiplied by its weight over the weight's bound, so that every entry
stays within its array's bound. Clipping the L2 norm, adding noise, fixed-point encoding and
masking all act on this one vector; :func:`decode` turns a sum of wire vectors back into
:class:`Summed`. Under client-level DP the clip scales the whole vector, counts included, and
the noise makes them real: the decoded counts are then noised sums (post-processing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

REAL, INTEGER = "real", "integer"


class StatisticsError(ValueError):
    """Statistics that do not match their spec, or a spec that is not consistent."""


@dataclass(frozen=True)
class ArraySpec:
    """One array of the statistics.

    Attributes:
        shape: the array's shape.
        kind: ``"real"`` (clipped to ``[-bound, bound]``) or ``"integer"`` (whole numbers
            within the bound, an error otherwise: a count is summed exactly or refused).
        bound: the public bound on every entry's absolute value; ``math.inf`` where nothing
            needs one (a run without secure aggregation or DP), which secure aggregation
            refuses.
        weight: the name of the array that weighs this one, or None.
    """

    shape: tuple[int, ...]
    kind: str = REAL
    bound: float = 1.0
    weight: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        if any(n < 0 for n in self.shape):
            raise StatisticsError(f"shape {self.shape} has a negative length")
        if self.kind not in (REAL, INTEGER):
            raise StatisticsError(f"kind must be {REAL!r} or {INTEGER!r}, not {self.kind!r}")
        if not self.bound > 0:  # NaN fails too
            raise StatisticsError(f"bound must be > 0, got {self.bound!r}")
        if self.kind == INTEGER and math.isfinite(self.bound) and self.bound != int(self.bound):
            raise StatisticsError(f"an integer array's bound must be whole, got {self.bound!r}")

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Spec:
    """The ordered arrays of one algorithm's statistics (build it with :meth:`of`)."""

    arrays: tuple[tuple[str, ArraySpec], ...]

    @classmethod
    def of(cls, arrays: Mapping[str, ArraySpec]) -> Spec:
        """The spec of ``arrays`` in their given order, checked: every weight names an
        unweighted array of the spec whose shape is ``()`` or a prefix of the weighted
        array's shape, and whose entries are non-negative by declaration (its bound)."""
        spec = cls(tuple(arrays.items()))
        by_name = dict(spec.arrays)
        if len(by_name) != len(spec.arrays):
            raise StatisticsError("array names must be distinct")
        for name, a in spec.arrays:
            if a.weight is None:
                continue
            if a.kind == INTEGER:  # w x / bound would not be whole, nor sum exactly
                raise StatisticsError(f"integer array {name!r} cannot be weighted")
            w = by_name.get(a.weight)
            if w is None:
                raise StatisticsError(f"array {name!r} is weighted by unknown {a.weight!r}")
            if w.weight is not None:
                raise StatisticsError(f"weight {a.weight!r} of {name!r} is itself weighted")
            if w.shape != a.shape[: len(w.shape)]:
                raise StatisticsError(
                    f"weight {a.weight!r} has shape {w.shape}; weighting {name!r} of shape "
                    f"{a.shape} needs () (scalar), a prefix (per row) or the same shape"
                )
        return spec

    def __getitem__(self, name: str) -> ArraySpec:
        return dict(self.arrays)[name]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.arrays)

    @property
    def size(self) -> int:
        """The length of the wire vector."""
        return sum(a.size for _, a in self.arrays)

    @property
    def bound(self) -> float:
        """The largest entry of any wire vector in absolute value."""
        return max((a.bound for _, a in self.arrays), default=1.0)

    def split(self, vector: np.ndarray) -> dict[str, np.ndarray]:
        """A wire vector's arrays by name, in their shapes (views of ``vector``)."""
        parts, offset = {}, 0
        for name, a in self.arrays:
            parts[name] = vector[offset : offset + a.size].reshape(a.shape)
            offset += a.size
        return parts

    @property
    def weights(self) -> frozenset[str]:
        return frozenset(a.weight for _, a in self.arrays if a.weight is not None)


def broadcast_weight(weight: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A scalar, per-row or per-entry weight shaped to multiply an array of ``shape``."""
    return weight.reshape(weight.shape + (1,) * (len(shape) - weight.ndim))


def _scale(weight: ArraySpec) -> float:
    """What a weighted array is divided by on the wire: its weight's bound (1 if none)."""
    return weight.bound if math.isfinite(weight.bound) else 1.0


def checked(stats: Mapping[str, np.ndarray], spec: Spec) -> dict[str, np.ndarray]:
    """``stats`` as float64 arrays, checked against ``spec``: the same names, shapes, finite
    entries; integers whole and within their bound; weights non-negative and within theirs.
    Reals are not checked against their bound: :func:`contribution` clips them."""
    if set(stats) != set(spec.names):
        missing, extra = set(spec.names) - set(stats), set(stats) - set(spec.names)
        raise StatisticsError(
            f"statistics have arrays {sorted(stats)}; the spec has {list(spec.names)}"
            f" (missing {sorted(missing)}, unexpected {sorted(extra)})"
        )
    out = {}
    for name, a in spec.arrays:
        x = np.asarray(stats[name], np.float64)
        if x.shape != a.shape:
            raise StatisticsError(f"array {name!r} has shape {x.shape}, the spec {a.shape}")
        if not np.isfinite(x).all():
            bad = x.size - np.count_nonzero(np.isfinite(x))
            raise StatisticsError(f"array {name!r}: {bad} of {x.size} entries are not finite")
        if a.kind == INTEGER and not np.array_equal(x, np.rint(x)):
            raise StatisticsError(f"integer array {name!r} has entries that are not whole")
        if (a.kind == INTEGER or name in spec.weights) and np.abs(x).max(initial=0) > a.bound:
            raise StatisticsError(
                f"array {name!r} has an entry of {np.abs(x).max():g}, beyond its bound {a.bound:g}"
            )
        if name in spec.weights and x.min(initial=0) < 0:
            raise StatisticsError(f"weight {name!r} has a negative entry")
        out[name] = x
    return out


def contribution(stats: Mapping[str, np.ndarray], spec: Spec) -> np.ndarray:
    """One client's wire vector (module docstring): checked, reals clipped, weighted arrays
    times their weight over its bound, flattened in spec order."""
    arrays = checked(stats, spec)
    out = np.empty(spec.size)
    offset = 0
    for name, a in spec.arrays:
        part = out[offset : offset + a.size].reshape(a.shape)
        x = arrays[name]
        if a.kind == REAL:
            np.clip(x, -a.bound, a.bound, out=part)
        else:
            part[...] = x
        if a.weight is not None:
            part *= broadcast_weight(arrays[a.weight], a.shape) / _scale(spec[a.weight])
        offset += a.size
    return out


@dataclass(frozen=True)
class Summed:
    """The sums of a cohort's statistics, which is all the server learns.

    Attributes:
        spec: the statistics' spec.
        sums: name -> ``sum_i w_i x_i`` (weighted) or ``sum_i x_i``.
        clients: how many clients' statistics the sums hold.
    """

    spec: Spec
    sums: Mapping[str, np.ndarray]
    clients: int

    def __getitem__(self, name: str) -> np.ndarray:
        return self.sums[name]

    def mean(self, name: str, empty: float = np.nan) -> np.ndarray:
        """``sum w x / sum w`` of a weighted array (``sum x / clients`` of an unweighted
        one), within the array's bound; ``empty`` where the summed weight is not positive
        (no data, or under DP a noised weight at or below zero). The mean of values within
        the bound is within it: the clamp only limits what a client that lied about its
        weight under secure aggregation, or the DP noise, can do to it."""
        a = self.spec[name]
        if a.weight is None:
            if not self.clients:
                return np.full(a.shape, empty)
            return np.clip(self.sums[name] / self.clients, -a.bound, a.bound)
        w = np.broadcast_to(broadcast_weight(self.sums[a.weight], a.shape), a.shape)
        out = np.full(a.shape, empty, np.float64)
        np.divide(self.sums[name], w, out=out, where=w > 0)
        return np.clip(out, -a.bound, a.bound, out=out)  # NaN stays NaN


def decode(total: np.ndarray, spec: Spec, clients: int, exact: bool = True) -> Summed:
    """:class:`Summed` from the sum of ``clients`` wire vectors: weighted arrays times their
    weight's bound; integer arrays rounded where the sum is ``exact`` (it is, up to the
    fixed-point rounding, without DP). A clipped and noised sum is decoded as it is: its
    counts are scaled by the clip and real, and rounding them would bias them (to 0, at a
    small clip norm)."""
    total = np.asarray(total, np.float64)
    if total.shape != (spec.size,):
        raise StatisticsError(f"a summed wire vector has shape {total.shape}, not ({spec.size},)")
    sums, offset = {}, 0
    for name, a in spec.arrays:
        x = total[offset : offset + a.size].reshape(a.shape).copy()
        if a.weight is not None:
            x *= _scale(spec[a.weight])
        if a.kind == INTEGER and exact:
            np.rint(x, out=x)
        sums[name] = x
        offset += a.size
    return Summed(spec, sums, clients)


def clip_l2(vector: np.ndarray, clip_norm: float) -> np.ndarray:
    """``vector`` scaled to L2 norm at most ``clip_norm`` (client-level DP's sensitivity)."""
    if not clip_norm > 0:
        raise StatisticsError(f"clip_norm must be > 0, got {clip_norm!r}")
    norm = float(np.linalg.norm(vector))
    return vector * (clip_norm / norm) if norm > clip_norm else vector.copy()
