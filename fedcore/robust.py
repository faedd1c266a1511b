"""Robust aggregators on typed statistics: the defences against malicious clients.

A robust aggregator replaces the cohort's sum by a statistic of the individual clients'
values, so a few clients cannot drag the result arbitrarily far. On typed statistics
(:mod:`fedcore.statistics`) a client's *value* of an array is its statistic divided by its
weight (a weighted array: its mean, e.g. its model update) or the statistic itself (an
unweighted one); an entry whose weight is zero carries no value. Each aggregator returns a
:class:`~fedcore.statistics.Summed` whose ``mean`` is the robust location, so an algorithm's
server hook reads it as it reads a plain sum:

- ``fedmedian``: the coordinate-wise median of the values (Yin et al. 2018);
- ``fedtrimmedavg``: the coordinate-wise mean after cutting ``int(beta k)`` values at each
  end, of the ``k`` clients with a value there (Yin et al. 2018);
- ``krum``: the statistics of the one client whose values are closest, in squared L2
  distance, to their ``n - f - 2`` nearest neighbours (Blanchard et al. 2017);
- ``multikrum``: the sum of the ``m`` clients of least Krum score (their weighted mean);
- ``bulyan``: multi-Krum selects ``n - 2f`` clients, then each coordinate is the mean of the
  ``n - 4f`` selected values closest to their median (El Mhamdi et al. 2018; needs
  ``n >= 4f + 3``);
- ``centered-clipping``: from the previous round's aggregate ``v``, ``L`` times
  ``v <- v + mean_i clip(x_i - v, tau)`` (Karimireddy et al. 2021).

Two layers go before any of them (and before a plain mean): ``clip_values`` scales each
client's values to an L2 norm of at most ``C`` (server-side norm clipping), and a
pre-aggregation turns the ``n`` clients into pseudo-clients, each the mean of a few:
``bucketing`` (seeded random buckets of ``s``, Karimireddy et al. 2022) or ``nnm`` (each
client's ``n - f`` nearest neighbours, itself included, Allouah et al. 2023).

Weights themselves are summed (they say how much data backs each entry). The first five are
Flower's ``FedMedian``, ``FedTrimmedAvg``, ``Krum``, ``MultiKrum`` and ``Bulyan``, whose
arithmetic they follow, lifted from model weights to any weighted statistics: a model update
is its weights minus the global model, and all of them are unchanged by that shift. The
vector rules (Krum, multi-Krum, Bulyan, centered clipping, NNM, clipping) read an entry that
carries no value as 0. All need every client's statistics, so they run without secure
aggregation and without DP noise on the sum.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedcore.statistics import Spec, Summed, broadcast_weight

ROBUST = ("fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan", "centered-clipping")
PRE_AGGREGATIONS = ("none", "bucketing", "nnm")


def values(stats: Sequence[Summed], name: str) -> np.ndarray:
    """The clients' values of array ``name``, stacked on axis 0: each client's statistic over
    its weight (NaN where the weight is zero), or the statistic of an unweighted array."""
    spec = stats[0].spec
    a = spec[name]
    out = np.stack([np.asarray(s[name], np.float64) for s in stats])
    if a.weight is None:
        return out
    w = np.stack(
        [np.broadcast_to(broadcast_weight(s[a.weight], a.shape), a.shape) for s in stats]
    ).astype(np.float64)
    return np.divide(out, w, out=np.full_like(out, np.nan), where=w > 0)


def trimmed_mean(x: np.ndarray, beta: float) -> np.ndarray:
    """The mean along axis 0 of ``x`` after cutting ``int(beta k)`` values at each end, where
    ``k`` is the number of non-NaN values at that coordinate (NaN where none is left).
    Flower's ``trim_mean`` when nothing is missing."""
    if not 0.0 <= beta < 0.5:
        raise ValueError(f"the trimmed fraction must be in [0, 0.5), got {beta!r}")
    ordered = np.sort(x, axis=0)  # NaN last
    k = np.count_nonzero(~np.isnan(x), axis=0)
    low = (beta * k).astype(int)
    high = k - low
    rank = np.arange(x.shape[0]).reshape((-1,) + (1,) * (x.ndim - 1))
    keep = (rank >= low) & (rank < high)
    total = np.where(keep, ordered, 0.0).sum(axis=0)
    count = keep.sum(axis=0)
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


def median(x: np.ndarray) -> np.ndarray:
    """The median along axis 0 of the non-NaN values (NaN where there is none)."""
    if not np.isnan(x).any():
        return np.median(x, axis=0)
    out = np.full(x.shape[1:], np.nan)
    present = ~np.isnan(x).all(axis=0)
    out[present] = np.nanmedian(x[:, present], axis=0)
    return out


def squared_distances(vectors: np.ndarray) -> np.ndarray:
    """The (n, n) squared L2 distances between the rows of ``vectors`` (Flower's
    ``compute_distances``)."""
    norms = np.square(vectors).sum(axis=1)
    return norms[:, None] + norms[None, :] - 2 * vectors @ vectors.T


def krum_scores(vectors: np.ndarray, num_malicious: int) -> np.ndarray:
    """Each row's sum of squared L2 distances to its ``max(1, n - f - 2)`` nearest other
    rows (the self-distance, first in the sort, left out as Flower does)."""
    closest = max(1, len(vectors) - num_malicious - 2)
    distance = squared_distances(vectors)
    return np.array([np.sum(row[np.argsort(row)[1 : closest + 1]]) for row in distance])


def krum_index(vectors: np.ndarray, num_malicious: int) -> int:
    """The row of ``vectors`` (one client's values each) of least Krum score (Flower's
    ``select_multikrum`` with one node selected)."""
    return int(np.argmin(krum_scores(vectors, num_malicious)))


def multikrum_indices(vectors: np.ndarray, num_malicious: int, select: int) -> np.ndarray:
    """The ``select`` rows of least Krum score, best first (Flower's ``select_multikrum``)."""
    if not 1 <= select <= len(vectors):
        raise ValueError(f"multi-Krum selects 1 to {len(vectors)} clients, not {select}")
    return np.argsort(krum_scores(vectors, num_malicious))[:select]


def bulyan(vectors: np.ndarray, num_malicious: int) -> np.ndarray:
    """Bulyan's location (Flower's ``Bulyan``): multi-Krum selects ``theta = n - 2f`` rows;
    each coordinate is the mean of the ``beta = theta - 2f`` selected values closest to the
    selected rows' coordinate-wise median."""
    n, f = len(vectors), num_malicious
    if n < 4 * f + 3:
        raise ValueError(f"Bulyan needs at least 4f + 3 = {4 * f + 3} clients, got {n}")
    theta = n - 2 * f
    chosen = vectors[multikrum_indices(vectors, f, theta)]
    reference = np.median(chosen, axis=0)
    beta = theta - 2 * f
    nearest = np.argpartition(np.abs(chosen - reference), beta - 1, axis=0)[:beta]
    return np.take_along_axis(chosen, nearest, axis=0).mean(axis=0)


def clip_rows(vectors: np.ndarray, norm: float) -> np.ndarray:
    """Each row of ``vectors`` scaled to L2 norm at most ``norm``."""
    if not norm > 0:
        raise ValueError(f"the clip norm must be > 0, got {norm!r}")
    lengths = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors * np.minimum(1.0, norm / np.maximum(lengths, 1e-300))


def centered_clipping(
    vectors: np.ndarray, reference: np.ndarray, radius: float, iterations: int = 1
) -> np.ndarray:
    """Centered clipping (Karimireddy et al. 2021): from ``reference`` (the previous round's
    aggregate), ``iterations`` times ``v <- v + mean_i clip(x_i - v, radius)``. An outlier
    moves the result by at most ``radius / n`` per iteration, whatever its norm."""
    if iterations < 1:
        raise ValueError(f"centered clipping needs at least one iteration, got {iterations}")
    v = np.asarray(reference, np.float64)
    for _ in range(iterations):
        v = v + clip_rows(vectors - v, radius).mean(axis=0)
    return v


def buckets(n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Bucketing's groups (Karimireddy et al. 2022): a random permutation of ``range(n)``
    cut into ``ceil(n / size)`` buckets of ``size`` (the last may be smaller)."""
    if size < 1:
        raise ValueError(f"a bucket holds at least one client, got {size}")
    order = rng.permutation(n)
    return [order[i : i + size] for i in range(0, n, size)]


def nearest_neighbours(vectors: np.ndarray, num_malicious: int) -> list[np.ndarray]:
    """Nearest-neighbour mixing's groups (Allouah et al. 2023): each row's ``n - f``
    nearest rows in L2 distance, itself included."""
    keep = len(vectors) - num_malicious
    if keep < 1:
        raise ValueError(f"NNM needs more clients than f = {num_malicious}, got {len(vectors)}")
    distance = squared_distances(vectors)
    np.fill_diagonal(distance, -np.inf)  # itself first, whatever the rounding
    return [np.argsort(row, kind="stable")[:keep] for row in distance]


def flat_values(stats: Sequence[Summed]) -> np.ndarray:
    """The (clients, d) matrix of every client's values of its non-weight arrays, in spec
    order, an entry without a value read as 0: what the vector rules measure."""
    spec = stats[0].spec
    names = [n for n in spec.names if n not in spec.weights]
    return np.concatenate(
        [np.nan_to_num(values(stats, n)).reshape(len(stats), -1) for n in names], axis=1
    )


def clip_values(stats: Sequence[Summed], norm: float) -> list[Summed]:
    """Each client's statistics with its values (:func:`flat_values`) scaled to L2 norm at
    most ``norm``, its weights kept: server-side norm clipping of each update."""
    lengths = np.linalg.norm(flat_values(stats), axis=1)
    if not norm > 0:
        raise ValueError(f"the clip norm must be > 0, got {norm!r}")
    out = []
    for s, length in zip(stats, lengths, strict=True):
        factor = min(1.0, norm / length) if length > 0 else 1.0
        weights = s.spec.weights
        sums = {n: s[n] if n in weights else s[n] * factor for n in s.spec.names}
        out.append(Summed(s.spec, sums, s.clients))
    return out


def mix(stats: Sequence[Summed], groups: Sequence[np.ndarray]) -> list[Summed]:
    """One pseudo-client per group: the mean of its members' statistics, so its value of a
    weighted array is the members' weighted mean and of an unweighted one their mean."""
    spec = stats[0].spec
    return [
        Summed(spec, {n: np.mean([stats[i][n] for i in g], axis=0) for n in spec.names}, 1)
        for g in groups
    ]


def pre_aggregate(
    name: str,
    stats: Sequence[Summed],
    num_malicious: int = 0,
    bucket_size: int = 2,
    rng: np.random.Generator | None = None,
) -> list[Summed]:
    """The pseudo-clients of pre-aggregation ``name`` (:data:`PRE_AGGREGATIONS`)."""
    if name == "none":
        return list(stats)
    if name == "bucketing":
        if rng is None:
            raise ValueError("bucketing needs a seeded generator for its permutation")
        return mix(stats, buckets(len(stats), bucket_size, rng))
    if name == "nnm":
        return mix(stats, nearest_neighbours(flat_values(stats), num_malicious))
    raise ValueError(f"unknown pre-aggregation {name!r}; one of {', '.join(PRE_AGGREGATIONS)}")


def _located(stats: Sequence[Summed], location: np.ndarray) -> Summed:
    """A Summed of ``stats`` whose mean of each non-weight array is ``location`` (flat, in
    :func:`flat_values` order; an entry no client weighs stays empty), weights summed."""
    spec = stats[0].spec
    sums = {n: np.sum([s[n] for s in stats], axis=0) for n in spec.weights}
    offset = 0
    for n in spec.names:
        if n in spec.weights:
            continue
        a = spec[n]
        part = location[offset : offset + a.size].reshape(a.shape)
        offset += a.size
        if a.weight is None:
            sums[n] = part * len(stats)
        else:
            w = np.broadcast_to(broadcast_weight(sums[a.weight], a.shape), a.shape)
            sums[n] = np.where(w > 0, part * w, 0.0)
    return Summed(spec, {n: sums[n] for n in spec.names}, len(stats))


def combine(
    name: str,
    stats: Sequence[Summed],
    trim_beta: float = 0.2,
    num_malicious: int = 0,
    *,
    select: int = 0,
    reference: np.ndarray | None = None,
    radius: float = 1.0,
    iterations: int = 1,
) -> Summed:
    """The robust aggregate ``name`` (one of :data:`ROBUST`, or ``"mean"``: the plain sum)
    of one :class:`Summed` per client: a Summed whose ``mean`` of each array is the robust
    location (``krum``: the chosen client's own statistics; ``multikrum``: the sum of the
    ``select`` chosen, ``n - f`` if 0). ``reference``: centered clipping's start (zeros if
    None)."""
    if name not in (*ROBUST, "mean"):
        raise ValueError(f"unknown robust aggregator {name!r}; one of {', '.join(ROBUST)}")
    if not stats:
        raise ValueError("a robust aggregate needs at least one client's statistics")
    spec: Spec = stats[0].spec
    if any(s.spec != spec or s.clients != 1 for s in stats):
        raise ValueError("a robust aggregate takes one client's statistics of one spec each")
    if name == "mean":
        return Summed(
            spec, {n: np.sum([s[n] for s in stats], axis=0) for n in spec.names}, len(stats)
        )
    if name in ("krum", "multikrum"):
        flat = flat_values(stats)
        if name == "krum":
            return stats[krum_index(flat, num_malicious)]
        chosen = multikrum_indices(flat, num_malicious, select or len(stats) - num_malicious)
        return combine("mean", [stats[i] for i in chosen])
    if name == "bulyan":
        return _located(stats, bulyan(flat_values(stats), num_malicious))
    if name == "centered-clipping":
        flat = flat_values(stats)
        start = np.zeros(flat.shape[1]) if reference is None else reference
        return _located(stats, centered_clipping(flat, start, radius, iterations))
    sums = {n: np.sum([s[n] for s in stats], axis=0) for n in spec.weights}
    for n in spec.names:
        if n in spec.weights:
            continue
        x = values(stats, n)
        location = median(x) if name == "fedmedian" else trimmed_mean(x, trim_beta)
        a = spec[n]
        if a.weight is None:
            sums[n] = location * len(stats)
        else:
            w = np.broadcast_to(broadcast_weight(sums[a.weight], a.shape), a.shape)
            sums[n] = np.where(w > 0, np.nan_to_num(location) * w, 0.0)
    return Summed(spec, {n: sums[n] for n in spec.names}, len(stats))


def location(summed: Summed) -> np.ndarray:
    """The flat mean of an aggregate's non-weight arrays, in :func:`flat_values` order (an
    empty entry as 0): centered clipping's reference for the next round."""
    spec = summed.spec
    names = [n for n in spec.names if n not in spec.weights]
    return np.concatenate([np.nan_to_num(summed.mean(n)).ravel() for n in names])
