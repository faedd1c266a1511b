"""The first centroids of federated k-means, from one round of client statistics.

Three ways (``kmeans.init``), each one round before Lloyd's:

- ``kfed``: k-FED's one-shot seeding (Dennis, Li & Smith, ICML 2021): each client runs
  k-means on its own points and sends its centres with their sizes; the server clusters the
  union of centres (weighted by size) into k.
- ``kmeans++``: each client sends k of its own points chosen by k-means++ (D^2 sampling,
  Arthur & Vassilvitskii 2007) with the sizes of their cells; the server runs weighted
  k-means++ on the union: a two-level k-means++, as k-means|| (Bahmani et al. 2012)
  oversamples and reclusters.
- ``random``: the server learns only the pooled mean and variance of each feature (a sum)
  and draws k centroids from that normal with its own seeded generator.

The first two place each client's centres (``kfed``: means of its local clusters;
``kmeans++``: some of its points) in a block of its own of the summed statistics, so the
server learns every block: secure aggregation hides nothing in that round (under DP the
blocks are noised like any statistic). ``random`` reveals sums only.
"""

from __future__ import annotations

import numpy as np

KFED, KMEANS_PP, RANDOM = "kfed", "kmeans++", "random"
INITS = (KFED, KMEANS_PP, RANDOM)


def _seed(rng: np.random.Generator) -> int:
    """A scikit-learn ``random_state`` drawn from ``rng`` (no global RNG)."""
    return int(rng.integers(2**31 - 1))


def local_seeds(
    x: np.ndarray, k: int, method: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One client's ``(k, d)`` candidate centres and ``(k,)`` sizes (the number of its
    points nearest to each); rows past ``len(x)`` are zero with size zero."""
    from sklearn.cluster import KMeans, kmeans_plusplus  # seconds to import: on use only

    from fedcore.tasks.kmeans.lloyd import assign

    x = np.asarray(x, np.float64)
    n, d = x.shape
    centres, sizes = np.zeros((k, d)), np.zeros(k)
    m = min(k, len(np.unique(x, axis=0))) if n else 0
    if m == 0:
        return centres, sizes
    if method == KFED:
        found = KMeans(m, init="k-means++", n_init=1, random_state=_seed(rng)).fit(x)
        local = found.cluster_centers_
    elif method == KMEANS_PP:
        local, _ = kmeans_plusplus(x, m, random_state=_seed(rng))
    else:
        raise ValueError(f"local seeding is {KFED!r} or {KMEANS_PP!r}, not {method!r}")
    centres[:m] = local
    sizes[:m] = np.bincount(assign(x, local)[0], minlength=m)
    return centres, sizes


def global_seeds(
    candidates: np.ndarray, weights: np.ndarray, k: int, method: str, rng: np.random.Generator
) -> np.ndarray:
    """``k`` centroids from the clients' weighted candidates: weighted k-means (``kfed``)
    or weighted k-means++ seeding (``kmeans++``). Candidates of weight <= 0 (none, or a
    noised weight under DP) are dropped; with fewer than ``k`` left, the heaviest repeat
    (their duplicates start empty and keep their place until points come near)."""
    from sklearn.cluster import KMeans, kmeans_plusplus

    keep = weights > 0
    candidates, weights = candidates[keep], weights[keep]
    if len(candidates) == 0:
        raise ValueError("no client sent a candidate centre: every client holds no points")
    if len(candidates) < k:
        order = np.argsort(-weights, kind="stable")
        extra = order[np.arange(k - len(candidates)) % len(order)]
        return np.concatenate([candidates, candidates[extra]])
    if method == KFED:
        found = KMeans(k, init="k-means++", n_init=1, random_state=_seed(rng))
        return found.fit(candidates, sample_weight=weights).cluster_centers_
    if method == KMEANS_PP:
        centres, _ = kmeans_plusplus(candidates, k, sample_weight=weights, random_state=_seed(rng))
        return centres
    raise ValueError(f"global seeding is {KFED!r} or {KMEANS_PP!r}, not {method!r}")


def moment_seeds(
    mean: np.ndarray, variance: np.ndarray, k: int, bound: float, rng: np.random.Generator
) -> np.ndarray:
    """``k`` centroids drawn from the normal with the pooled per-feature ``mean`` and
    ``variance`` (a noised variance below zero counts as zero), clipped to the features'
    public ``bound``."""
    std = np.sqrt(np.maximum(variance, 0.0))
    draw = rng.normal(mean, std, size=(k, len(mean)))
    return np.clip(draw, -bound, bound)
