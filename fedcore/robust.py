"""Robust aggregators on typed statistics: coordinate-wise median, trimmed mean, Krum.

A robust aggregator replaces the cohort's sum by a statistic of the individual clients'
values, so one client (or a few) cannot drag the result arbitrarily far. On typed
statistics (:mod:`fedcore.statistics`) a client's *value* of an array is its statistic
divided by its weight (a weighted array: its mean, e.g. its model update) or the statistic
itself (an unweighted one); an entry whose weight is zero carries no value. Each aggregator
returns a :class:`~fedcore.statistics.Summed` whose ``mean`` is the robust location, so an
algorithm's server hook reads it as it reads a plain sum:

- ``fedmedian``: the coordinate-wise median of the values (Yin et al. 2018);
- ``fedtrimmedavg``: the coordinate-wise mean after cutting ``int(beta k)`` values at each
  end, of the ``k`` clients with a value there (Yin et al. 2018);
- ``krum``: the statistics of the one client whose values are closest, in squared L2
  distance, to their ``n - f - 2`` nearest neighbours (Blanchard et al. 2017).

Weights themselves are summed (they say how much data backs each entry). These are Flower's
``FedMedian``, ``FedTrimmedAvg`` and ``Krum``, whose arithmetic they follow, lifted from
model weights to any weighted statistics: a model update is its weights minus the global
model, and all three are unchanged by that shift. They need every client's statistics, so
they run without secure aggregation and without DP noise on the sum.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedcore.statistics import Spec, Summed, broadcast_weight

ROBUST = ("fedmedian", "fedtrimmedavg", "krum")


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


def krum_index(vectors: np.ndarray, num_malicious: int) -> int:
    """The row of ``vectors`` (one client's values each) with the least sum of squared L2
    distances to its ``max(1, n - f - 2)`` nearest other rows (Flower's ``select_multikrum``
    with one node selected)."""
    norms = np.square(vectors).sum(axis=1)
    distance = norms[:, None] + norms[None, :] - 2 * vectors @ vectors.T
    closest = max(1, len(vectors) - num_malicious - 2)
    scores = [np.sum(row[np.argsort(row)[1 : closest + 1]]) for row in distance]
    return int(np.argmin(scores))


def combine(
    name: str, stats: Sequence[Summed], trim_beta: float = 0.2, num_malicious: int = 0
) -> Summed:
    """The robust aggregate ``name`` (one of :data:`ROBUST`) of one :class:`Summed` per
    client: a Summed of all of them whose ``mean`` of each array is the robust location
    (``krum``: the chosen client's own statistics)."""
    if name not in ROBUST:
        raise ValueError(f"unknown robust aggregator {name!r}; one of {', '.join(ROBUST)}")
    if not stats:
        raise ValueError("a robust aggregate needs at least one client's statistics")
    spec: Spec = stats[0].spec
    if any(s.spec != spec or s.clients != 1 for s in stats):
        raise ValueError("a robust aggregate takes one client's statistics of one spec each")
    robust = [n for n in spec.names if n not in spec.weights]
    if name == "krum":
        flat = np.concatenate(
            [np.nan_to_num(values(stats, n)).reshape(len(stats), -1) for n in robust], axis=1
        )
        return stats[krum_index(flat, num_malicious)]
    sums = {n: np.sum([s[n] for s in stats], axis=0) for n in spec.weights}
    for n in robust:
        x = values(stats, n)
        location = median(x) if name == "fedmedian" else trimmed_mean(x, trim_beta)
        a = spec[n]
        if a.weight is None:
            sums[n] = location * len(stats)
        else:
            w = np.broadcast_to(broadcast_weight(sums[a.weight], a.shape), a.shape)
            sums[n] = np.where(w > 0, np.nan_to_num(location) * w, 0.0)
    return Summed(spec, {n: sums[n] for n in spec.names}, len(stats))
