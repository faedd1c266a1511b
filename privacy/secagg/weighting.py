"""What a client masks and how the server turns the sum back into an average: pure functions
shared by both sides of secure aggregation.

A client masks its clipped update times its aggregation weight ``w``, and ``w`` itself, all
over ``W = secagg.max-weight`` (so every entry stays within the clipping range); the server
divides the sums. For per-item averaging (the ``mf`` task, as
:class:`strategies.items.ItemFedAvg` does in the clear) each item row is weighted by the
client's count of users who rated the item instead, and the counts are masked too: the server
learns how many users of the cohort rated each item, not who.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord

from fedcore.arrays import to_numpy
from fedcore.config import RunConfig
from fedcore.keys import ROW_WEIGHTED


def row_weighted(cfg: RunConfig) -> bool:
    """Whether a round's sum is averaged per item row (the ``mf`` task without DP), as
    :class:`strategies.items.ItemFedAvg` does in the clear: the clients then also mask their
    per-item rater counts, and the server divides each row's sum by its count. Under DP the
    counts are not sent (they are not noised) and every client weighs alike."""
    return cfg.task == "mf" and cfg.privacy.dp == "off"


def coordinate_weights(model: ArrayRecord, weight: float, counts: np.ndarray) -> np.ndarray:
    """Each coordinate's weight: the rater count of its row for the arrays averaged per row
    (``ROW_WEIGHTED``), the client's ``weight`` for the others."""
    parts = []
    for name in model:
        size = to_numpy(model[name]).size
        if name in ROW_WEIGHTED:
            if size % len(counts):
                raise ValueError(f"array {name!r} does not have one row per item")
            parts.append(np.repeat(counts.astype(np.float64), size // len(counts)))
        else:
            parts.append(np.full(size, weight))
    return np.concatenate(parts)


def weighted_input(
    update: np.ndarray,
    weight: float,
    cfg: RunConfig,
    rows: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """What a client masks, all over ``W = secagg.max-weight``: ``w * clip(update)`` followed
    by ``w``, so that the server can divide the sums. Client-level DP weighs every client
    alike (``w = W``), as its sensitivity analysis assumes. With per-item averaging, ``rows``
    is (each coordinate's weight from :func:`coordinate_weights`, the client's rater count
    per item): coordinates are weighted by it and the counts come before ``w``."""
    s = cfg.secagg
    if cfg.privacy.dp in ("client", "distributed"):
        weight = s.max_weight
    counts = np.zeros(0) if rows is None else rows[1]
    largest = max(weight, float(counts.max(initial=0)))
    if largest > s.max_weight:
        raise ValueError(f"client weight {largest:g} exceeds secagg.max-weight {s.max_weight:g}")
    out = np.empty(len(update) + len(counts) + 1)
    body = out[: len(update)]
    np.clip(update, -s.bound, s.bound, out=body)
    body *= weight if rows is None else rows[0]
    out[len(update) : -1] = counts
    out[-1] = weight
    out /= s.max_weight
    return out


def average_of_sum(
    model: ArrayRecord, total: np.ndarray, cfg: RunConfig
) -> tuple[np.ndarray, np.ndarray | None]:
    """The flat step of the model from the unmasked sum of :func:`weighted_input`: the
    weighted mean update (client-level DP: the sum, which the DP strategy divides), and the
    cohort's rater counts per item where rows are averaged (else None)."""
    size = sum(to_numpy(a).size for a in model.values())
    body, weight = total[:size], total[-1]
    if weight <= 0:
        raise ValueError("the unmasked total weight is not positive")
    if not row_weighted(cfg):
        dp = cfg.privacy.dp in ("client", "distributed")
        return (body if dp else body / weight), None
    counts = total[size:-1]
    denominators = coordinate_weights(model, weight, counts)
    step = np.divide(body, denominators, out=np.zeros_like(body), where=denominators > 0)
    # counts are integers over W; rounding removes the fixed-point error from them
    return step, np.rint(counts * cfg.secagg.max_weight)
