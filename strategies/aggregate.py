"""Pure aggregation math: a streaming weighted mean and the spread of client metrics.

The server never holds more than one running sum per array, whatever the cohort size: each
update is added as it arrives (``add``) and the mean is read once at the end (``result``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


class WeightedMean:
    """Streaming weighted mean of same-shaped named arrays, summed in float64.

    Args:
        template: name -> (shape, dtype) that every update must match (usually the global
            model that was sent); ``None`` takes the first update as the template.
    """

    def __init__(self, template: Mapping[str, tuple[tuple[int, ...], np.dtype]] | None = None):
        self._template = dict(template) if template is not None else None
        self._sums: dict[str, np.ndarray] = {}
        self.total_weight = 0.0
        self.count = 0

    def check(self, arrays: Mapping[str, np.ndarray], weight: float) -> None:
        """Raise ``ValueError`` naming the problem if ``arrays`` cannot join the mean."""
        if not np.isfinite(weight) or weight < 0:
            raise ValueError(f"weight must be a finite number >= 0, got {weight!r}")
        template = self._template
        if template is None:
            return
        if set(arrays) != set(template):
            missing, extra = (
                sorted(set(template) - set(arrays)),
                sorted(set(arrays) - set(template)),
            )
            raise ValueError(f"array names differ from the model: missing {missing}, extra {extra}")
        for name, a in arrays.items():
            if a.shape != template[name][0]:
                raise ValueError(
                    f"array {name!r} has shape {a.shape}, expected {template[name][0]}"
                )
            if not np.all(np.isfinite(a)):
                raise ValueError(f"array {name!r} contains NaN or infinity")

    def add(self, arrays: Mapping[str, np.ndarray], weight: float) -> None:
        """Add one update with its weight (validated first; a bad update changes nothing)."""
        self.check(arrays, weight)
        if self._template is None:
            self._template = {k: (a.shape, a.dtype) for k, a in arrays.items()}
        for name, a in arrays.items():
            if name in self._sums:
                self._sums[name] += weight * a
            else:
                self._sums[name] = weight * a.astype(np.float64)
        self.total_weight += weight
        self.count += 1

    def result(self) -> dict[str, np.ndarray]:
        """The weighted mean, in each array's original dtype."""
        if self.count == 0 or self.total_weight <= 0:
            raise ValueError("no update with positive weight was added")
        return {
            name: (s / self.total_weight).astype(self._template[name][1])
            for name, s in self._sums.items()
        }


def weighted_mean(
    updates: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float]
) -> dict[str, np.ndarray]:
    """Convenience: the weighted mean of a list of updates."""
    acc = WeightedMean()
    for u, w in zip(updates, weights, strict=True):
        acc.add(u, w)
    return acc.result()


def spread(values: Sequence[float], worst_fraction: float = 0.1) -> dict[str, float]:
    """Unweighted spread of a per-client metric: mean, std, min, and the mean of the worst
    ``worst_fraction`` of clients (at least one), the fairness figure FL papers report."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    if v.size == 0:
        return {}
    k = max(1, int(np.floor(worst_fraction * v.size)))
    return {
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v[0]),
        "worst10": float(v[:k].mean()),
    }
