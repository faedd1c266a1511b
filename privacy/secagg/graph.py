"""Who masks with whom: the complete graph (Bonawitz et al. 2017) or the sparse SecAgg+
graph (Bell et al. 2020), a random k-regular Harary graph over the cohort.

The graph is a public function of the round's seed and the cohort, so every party computes
the same one without a message. In the Harary graph H(k, n) node ``i`` neighbours the ``k/2``
nodes on either side of it in a ring; a seeded permutation of the cohort places clients on
the ring at random, so no one chooses their neighbours.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def neighbours(
    clients: Sequence[int], degree: int | None, rng: np.random.Generator
) -> dict[int, list[int]]:
    """Each client's neighbours: everyone else if ``degree`` is None or at least n - 1,
    else ``degree`` (rounded up to even) others from a random Harary graph."""
    clients = sorted(clients)
    n = len(clients)
    if degree is None or degree >= n - 1:
        return {c: [d for d in clients if d != c] for c in clients}
    if degree < 1:
        raise ValueError(f"degree must be >= 1, got {degree}")
    half = (degree + 1) // 2
    ring = [clients[i] for i in rng.permutation(n)]
    out = {}
    for i, c in enumerate(ring):
        near = {ring[(i + d) % n] for d in range(-half, half + 1) if d != 0}
        out[c] = sorted(near)
    return out


def default_degree(n: int) -> int:
    """An O(log n) degree for SecAgg+: ``2 * ceil(log2 n) + 1`` rounded to even (Bell et
    al. use about ``log n`` up to a constant; the margin keeps threshold survival likely)."""
    k = 2 * int(np.ceil(np.log2(max(n, 2)))) + 2
    return min(k, n - 1)
