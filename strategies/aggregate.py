"""Pure aggregation math: a streaming weighted mean and the spread of client metrics.

The server never holds more than one running sum per array, whatever the cohort size: each
update is added as it arrives (``add``) and the mean is read once at the end (``result``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

Template = Mapping[str, tuple[tuple[int, ...], np.dtype]]


def check_update(
    arrays: Mapping[str, np.ndarray], weight: float, template: Template | None = None
) -> None:
    """Raise ``ValueError`` naming the problem if an update is unusable: a negative or
    non-finite weight, names or shapes that differ from ``template``, NaN or infinity."""
    if not np.isfinite(weight) or weight < 0:
        raise ValueError(f"weight must be a finite number >= 0, got {weight!r}")
    if template is None:
        return
    if set(arrays) != set(template):
        missing, extra = sorted(set(template) - set(arrays)), sorted(set(arrays) - set(template))
        raise ValueError(f"array names differ from the model: missing {missing}, extra {extra}")
    for name, a in arrays.items():
        if a.shape != template[name][0]:
            raise ValueError(f"array {name!r} has shape {a.shape}, expected {template[name][0]}")
        if not np.isfinite(a).all():
            raise ValueError(f"array {name!r} contains NaN or infinity")


class WeightedMean:
    """Streaming weighted mean of same-shaped named arrays, summed in float64.

    Args:
        template: name -> (shape, dtype) that every update must match (usually the global
            model that was sent); ``None`` takes the first update as the template.
    """

    def __init__(self, template: Template | None = None):
        self._template = dict(template) if template is not None else None
        self._sums: dict[str, np.ndarray] = {}
        self.total_weight = 0.0
        self.count = 0

    def check(self, arrays: Mapping[str, np.ndarray], weight: float) -> None:
        """Raise ``ValueError`` naming the problem if ``arrays`` cannot join the mean."""
        check_update(arrays, weight, self._template)

    def add(self, arrays: Mapping[str, np.ndarray], weight: float) -> None:
        """Add one update with its weight (validated first; a bad update changes nothing)."""
        self.check(arrays, weight)
        if self._template is None:
            self._template = {k: (a.shape, a.dtype) for k, a in arrays.items()}
        for name, a in arrays.items():
            if name not in self._sums:
                self._sums[name] = np.zeros(a.shape, np.float64)
            # the product in the update's dtype (float32: half the cost of a float64 cast),
            # the running sum in float64
            self._sums[name] += weight * a
        self.total_weight += weight
        self.count += 1

    def sums(self) -> dict[str, np.ndarray]:
        """The float64 weighted sums so far (read-only views)."""
        return {name: s.view() for name, s in self._sums.items()}

    def result(self) -> dict[str, np.ndarray]:
        """The weighted mean, in each array's original dtype."""
        if self.count == 0 or self.total_weight <= 0:
            raise ValueError("no update with positive weight was added")
        return {
            name: (s / self.total_weight).astype(self._template[name][1])
            for name, s in self._sums.items()
        }


class MetricMean:
    """Weighted mean of scalar client metrics; each name averages over the clients that sent
    it, and a non-finite value is refused."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self._weights: dict[str, float] = {}

    @staticmethod
    def scalars(metrics: Mapping[str, object], skip: str = "") -> dict[str, float]:
        """The finite scalar entries of ``metrics`` (lists and ``skip`` left out)."""
        out = {k: float(v) for k, v in metrics.items() if k != skip and not isinstance(v, list)}
        bad = [k for k, v in out.items() if not np.isfinite(v)]
        if bad:
            raise ValueError(f"metric {bad[0]!r} is not finite")
        return out

    def add(self, values: Mapping[str, float], weight: float) -> None:
        for name, value in values.items():
            self._sums[name] = self._sums.get(name, 0.0) + weight * value
            self._weights[name] = self._weights.get(name, 0.0) + weight

    def result(self) -> dict[str, float]:
        return {k: self._sums[k] / w for k, w in self._weights.items() if w > 0}


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
