"""Table ``[kmeans]`` of task ``kmeans`` (imports no numpy: every process parses the config)."""

from __future__ import annotations

from dataclasses import dataclass

from fedcore.config import option


@dataclass(frozen=True)
class KMeansOptions:
    """Table ``[kmeans]``."""

    k: int = option(3, ge=1, le=4096, doc="kmeans: number of clusters")
    init: str = option(
        "kfed",
        choices=("kfed", "kmeans++", "random"),
        doc="kmeans: round 1 seeds the centroids: kfed (clients' local k-means centres, "
        "clustered), kmeans++ (clients' k-means++ points, reseeded) or random (from the "
        "pooled mean and variance); kfed and kmeans++ reveal each client's centres",
    )
    batch_size: int = option(
        0,
        ge=0,
        doc="kmeans: 0 (Lloyd: every point, every round) or a client's points per round, "
        "drawn afresh (mini-batch k-means: each centroid's rate is its count / all it saw)",
    )
    bound: float = option(
        1.0,
        gt=0,
        doc="kmeans: public bound on every feature's absolute value (points are clipped to "
        "it; fedcore's image datasets and iris lie in [0, 1])",
    )
