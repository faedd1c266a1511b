"""Pure aggregation math of client metrics: their weighted mean and their spread.

(The mean of the clients' statistics is :func:`fedcore.statistics.decode` of their sum.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


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

    @staticmethod
    def weight(metrics: Mapping[str, object], key: str, default: float) -> float:
        """The reply's weight ``metrics[key]`` (``default`` if absent): ValueError unless it
        is a finite number >= 0 (a client writes it: NaN would erase every mean)."""
        value = metrics.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{key!r} is {type(value).__name__}, not a number")
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{key!r} must be a finite number >= 0, got {value!r}")
        return float(value)

    def add(self, values: Mapping[str, float], weight: float) -> None:
        for name, value in values.items():
            self._sums[name] = self._sums.get(name, 0.0) + weight * value
            self._weights[name] = self._weights.get(name, 0.0) + weight

    def result(self) -> dict[str, float]:
        return {k: self._sums[k] / w for k, w in self._weights.items() if w > 0}


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
