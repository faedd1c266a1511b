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

import math

import numpy as np
from flwr.app import ArrayRecord

from fedcore.arrays import to_numpy
from fedcore.config import RunConfig
from fedcore.keys import ROW_WEIGHTED
from privacy.plan import dp_plan
from privacy.secagg.quantize import input_bound


def row_weighted(cfg: RunConfig) -> bool:
    """Whether a round's sum is averaged per item row (the ``mf`` task without DP), as
    :class:`strategies.items.ItemFedAvg` does in the clear: the clients then also mask their
    per-item rater counts, and the server divides each row's sum by its count. Under DP the
    counts are not sent (they are not noised) and every client weighs alike."""
    return cfg.task == "mf" and cfg.privacy.dp == "off"


def rater_counts(counts: np.ndarray, num_items: int) -> np.ndarray:
    """A client's per-item rater counts as float64, checked: one whole, non-negative count
    per item row (a negative or fractional count would cancel or distort other clients')."""
    counts = np.asarray(counts, np.float64)
    if counts.shape != (num_items,):
        raise ValueError(f"{num_items} item rows need {num_items} rater counts, got {counts.shape}")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0) or np.any(counts != np.rint(counts)):
        raise ValueError("rater counts must be whole numbers >= 0")
    return counts


def _num_items(model: ArrayRecord) -> int:
    for name in model:
        if name in ROW_WEIGHTED:
            return to_numpy(model[name]).shape[0]
    raise ValueError(f"per-item weighting needs one of {sorted(ROW_WEIGHTED)} in the model")


def coordinate_weights(model: ArrayRecord, weight: float, counts: np.ndarray) -> np.ndarray:
    """Each coordinate's weight: the rater count of its row for the arrays averaged per row
    (``ROW_WEIGHTED``, one row per item), the client's ``weight`` for the others."""
    parts = []
    for name in model:
        array = to_numpy(model[name])
        if name in ROW_WEIGHTED:
            if array.shape[0] != len(counts):
                raise ValueError(f"array {name!r} has {array.shape[0]} rows, not one per item")
            parts.append(np.repeat(counts, array.size // len(counts)))
        else:
            parts.append(np.full(array.size, weight))
    return np.concatenate(parts)


def weighted_input(
    update: np.ndarray,
    weight: float,
    cfg: RunConfig,
    model: ArrayRecord | None = None,
    counts: np.ndarray | None = None,
) -> np.ndarray:
    """What a client masks, all over ``W = secagg.max-weight``: ``w * clip(update)`` followed
    by ``w``, so that the server can divide the sums. Client-level DP weighs every client
    alike (``w = W``), as its sensitivity analysis assumes. With per-item averaging, the
    coordinates of each item row of ``model`` are weighted by the client's rater ``counts``
    instead, and the counts come before ``w``."""
    s = cfg.secagg
    finite = np.isfinite(update)
    if not finite.all():  # before the clip below, which would pass infinity off as the bound
        raise ValueError(
            f"{update.size - np.count_nonzero(finite)} of {update.size} update entries are "
            "not finite (the update diverged)"
        )
    if cfg.privacy.dp in ("client", "distributed"):
        weight = s.max_weight
    if weight > s.max_weight:
        raise ValueError(f"client weight {weight:g} exceeds secagg.max-weight {s.max_weight:g}")
    if counts is None:
        counts, weights = np.zeros(0), weight
    else:
        if model is None:
            raise ValueError("per-item weighting needs the model the counts refer to")
        counts = rater_counts(counts, _num_items(model))
        if counts.max(initial=0) > s.max_weight:
            raise ValueError(
                f"a rater count of {counts.max():g} exceeds secagg.max-weight {s.max_weight:g}"
            )
        weights = coordinate_weights(model, weight, counts)
    out = np.empty(len(update) + len(counts) + 1)
    body = out[: len(update)]
    np.clip(update, -s.bound, s.bound, out=body)
    body *= weights
    out[len(update) : -1] = counts
    out[-1] = weight
    out /= s.max_weight
    return out


def masked_length(model: ArrayRecord, cfg: RunConfig) -> int:
    """The length of what every client masks for ``model`` (:func:`weighted_input`): the
    flat update, the per-item rater counts where rows are averaged, and the weight."""
    size = sum(to_numpy(a).size for a in model.values())
    return size + (_num_items(model) if row_weighted(cfg) else 0) + 1


def average_of_sum(
    model: ArrayRecord, total: np.ndarray, cfg: RunConfig
) -> tuple[np.ndarray, np.ndarray | None]:
    """The flat step of the model from the unmasked sum of :func:`weighted_input`: the
    weighted mean update (client-level DP: the sum, which the DP strategy divides), and the
    cohort's rater counts per item where rows are averaged (else None)."""
    size = sum(to_numpy(a).size for a in model.values())
    per_item = row_weighted(cfg)
    expected = masked_length(model, cfg)
    if len(total) != expected:
        raise ValueError(f"the unmasked sum has {len(total)} entries, expected {expected}")
    body, weight = total[:size], total[-1]
    if weight <= 0:
        raise ValueError("the unmasked total weight is not positive")
    if not per_item:
        dp = cfg.privacy.dp in ("client", "distributed")
        return (body if dp else body / weight), None
    # the counts are whole numbers over W: rounding removes their fixed-point error, and the
    # rows are divided by the same exact counts that are returned
    counts = np.rint(total[size:-1] * cfg.secagg.max_weight)
    denominators = coordinate_weights(model, weight, counts / cfg.secagg.max_weight)
    step = np.divide(body, denominators, out=np.zeros_like(body), where=denominators > 0)
    return step, counts


def statistics_bound(spec_bound: float, cfg: RunConfig) -> float:
    """The encoding range of an algorithm's wire vector (:mod:`fedcore.statistics`): its
    spec's bound, at least 1; under distributed DP the clipped vector (entries at most the
    clip norm) plus 8 standard deviations of a client's noise share, so the clip in the
    encoding does not cut the noise."""
    if not math.isfinite(spec_bound):
        raise ValueError(
            "secure aggregation needs a finite bound on every statistic; the algorithm's spec "
            "declares none"
        )
    p = cfg.privacy
    if p.dp != "distributed":
        return input_bound(spec_bound)
    share = dp_plan(cfg).client_noise_std(p.clip_norm)
    return input_bound(min(spec_bound, p.clip_norm) + 8 * share)
