"""Lloyd's algorithm as pure functions: assignment, a client's per-cluster statistics, the
centroid steps (full and mini-batch) and the cost.

The federated round is these functions split at the sum: each client computes
:func:`cluster_stats` on its own points, the run sums them (securely, with DP if asked), and
the server applies :func:`lloyd_step` (or :func:`minibatch_step`) to the totals. A sum of
per-cluster sums and counts over any partition of the points is the pooled one, so a round
is exactly the centralized Lloyd step on the pooled data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def squared_distances(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``(n, k)`` squared Euclidean distances, computed pairwise (no expansion of
    ``|x|^2 - 2 x.c + |c|^2``, whose cancellation errors can flip a near tie)."""
    x = np.asarray(x, np.float64)
    c = np.asarray(centroids, np.float64)
    if len(x) * len(c) * x.shape[1] <= 1 << 24:
        return ((x[:, None, :] - c[None, :, :]) ** 2).sum(axis=2)
    out = np.empty((len(x), len(c)))
    for j, cj in enumerate(c):  # large inputs: one column at a time, bounded memory
        out[:, j] = ((x - cj) ** 2).sum(axis=1)
    return out


def assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each point's nearest centroid (the lowest index on a tie, as scikit-learn) and its
    squared distance to it."""
    d = squared_distances(x, centroids)
    labels = d.argmin(axis=1)
    return labels, d[np.arange(len(x)), labels]


@dataclass(frozen=True)
class ClusterStats:
    """What one client (or the pooled data) contributes to a Lloyd step.

    Attributes:
        sums: ``(k, d)`` per cluster, the sum of its points.
        counts: ``(k,)`` per cluster, how many points it has.
        costs: ``(k,)`` per cluster, the sum of its points' squared distances to the
            centroid they were assigned to (the k-means cost, inertia, of the centroids
            the step starts from).
    """

    sums: np.ndarray
    counts: np.ndarray
    costs: np.ndarray

    def __add__(self, other: ClusterStats) -> ClusterStats:
        return ClusterStats(
            self.sums + other.sums, self.counts + other.counts, self.costs + other.costs
        )


def cluster_stats(x: np.ndarray, centroids: np.ndarray) -> ClusterStats:
    """Per cluster of ``centroids``: the sum, count and cost of the points of ``x``
    nearest to it (a cluster without points: zeros)."""
    x = np.asarray(x, np.float64)
    k, d = np.shape(centroids)
    labels, dist = assign(x, centroids) if len(x) else (np.zeros(0, int), np.zeros(0))
    sums = np.zeros((k, d))
    np.add.at(sums, labels, x)
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    costs = np.bincount(labels, weights=dist, minlength=k)
    return ClusterStats(sums, counts, costs)


def lloyd_step(centroids: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The new centroids: each cluster's mean; a cluster with no points (under DP: a noised
    count at or below zero) keeps its centroid."""
    centroids = np.asarray(centroids, np.float64)
    counts = np.asarray(counts, np.float64)
    means = np.divide(sums, counts[:, None], out=centroids.copy(), where=counts[:, None] > 0)
    return means


def minibatch_step(
    centroids: np.ndarray, seen: np.ndarray, sums: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mini-batch k-means' step (Sculley 2010; scikit-learn's ``MiniBatchKMeans``, and
    NVFlare's federated rule): each centroid moves to the mean of everything it has been
    assigned so far, ``(seen c + sums) / (seen + counts)``, so its learning rate is
    ``counts / (seen + counts)``. Returns the centroids and the new ``seen``."""
    centroids = np.asarray(centroids, np.float64)
    counts = np.maximum(np.asarray(counts, np.float64), 0.0)  # a noised count below zero: none
    total = seen + counts
    moved = np.divide(
        seen[:, None] * centroids + sums,
        total[:, None],
        out=centroids.copy(),
        where=(counts[:, None] > 0) & (total[:, None] > 0),
    )
    return moved, total


def cost(x: np.ndarray, centroids: np.ndarray) -> float:
    """The k-means cost (scikit-learn's inertia): the sum of squared distances of the
    points to their nearest centroid."""
    return float(assign(x, centroids)[1].sum()) if len(x) else 0.0
