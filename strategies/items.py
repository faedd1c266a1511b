"""Aggregation per item row for federated collaborative filtering.

Each client touches only the items its users rated, so a plain mean over clients would shrink
every item towards its old value by the fraction of clients that did not rate it. Here item
row ``i`` moves by the mean update of the clients that rated it (weighted by how many of their
users did), scaled by a server learning rate; the global bias moves by the mean update
weighted by the clients' numbers of ratings. Flower's built-in strategies average identical
dense arrays from everyone and cannot weight per row.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord

from fedcore.arrays import to_numpy, to_numpy_dict, to_record
from fedcore.keys import ITEM_RATERS, ROW_WEIGHTED
from privacy.secagg.weighting import rater_counts
from strategies.aggregate import MetricMean, check_update
from strategies.fedavg import FedAvg


class ItemMean:
    """The running per-item mean of ``(arrays, num_ratings)`` replies (each with its
    ``item-raters`` counts): the server holds one sum per array and the counts, whatever the
    cohort size."""

    def __init__(self, current: dict[str, np.ndarray]) -> None:
        self.current = current
        self.steps = {name: np.zeros(value.shape) for name, value in current.items()}
        self.raters: np.ndarray | None = None
        self.total_weight, self.count = 0.0, 0

    def add(self, arrays: dict[str, np.ndarray], weight: float) -> None:
        counts = arrays[ITEM_RATERS]
        self.raters = counts.astype(np.float64) if self.raters is None else self.raters + counts
        self.total_weight += weight
        self.count += 1
        rows = np.flatnonzero(counts)  # a client moves only the items its users rated
        for name, value in self.current.items():
            if name in ROW_WEIGHTED:
                delta = arrays[name][rows].astype(np.float64) - value[rows]
                self.steps[name][rows] += delta * _rows(counts[rows], delta)
            else:
                self.steps[name] += weight * (arrays[name].astype(np.float64) - value)

    def result(self, server_lr: float = 1.0) -> dict[str, np.ndarray]:
        """The new shared model: each item row moved by its raters' mean update, the rest by
        the weighted mean, all times ``server_lr``."""
        if self.count == 0:
            raise ValueError("no updates to average")
        out = {}
        for name, value in self.current.items():
            step = self.steps[name]
            if name in ROW_WEIGHTED:
                step = step / np.maximum(_rows(self.raters, step), 1.0)
            else:
                step = step / max(self.total_weight, 1.0)
            out[name] = (value + server_lr * step).astype(value.dtype)
        return out


def item_average(
    current: dict[str, np.ndarray],
    updates: list[tuple[dict[str, np.ndarray], float]],
    server_lr: float = 1.0,
) -> dict[str, np.ndarray]:
    """:class:`ItemMean` of ``updates`` in one call (checked against a brute-force loop)."""
    mean = ItemMean(current)
    for arrays, weight in updates:
        mean.add(arrays, weight)
    return mean.result(server_lr)


def _rows(counts: np.ndarray, like: np.ndarray) -> np.ndarray:
    return counts.reshape((-1,) + (1,) * (like.ndim - 1))


class ItemFedAvg(FedAvg):
    """FedAvg for the ``mf`` task: per-item weighting, a server learning rate.

    Under user-level DP no client sends rater counts (they would leave un-noised). With local
    DP (``row_weighted = False``) every client weighs 1 on every row; with client-level or
    distributed DP the DP wrapper takes the fixed-denominator mean, and the server learning
    rate comes after its noise (:meth:`after_noise`)."""

    server_lr: float = 1.0
    row_weighted: bool = True

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if self.dp_cohort_size is not None:  # user-level DP: the fixed-denominator mean
            return super().aggregate_train(server_round, replies)
        template = dict(self._template)
        if self.row_weighted:
            template[ITEM_RATERS] = (self._template["item_bias"][0], np.float32)
        items_mean, metrics_mean = ItemMean(self._current), MetricMean()
        for msg, record, metrics, weight in self._contents(replies, with_arrays=True):
            try:
                arrays = to_numpy_dict(record)
                check_update(arrays, weight, template)
                if self.row_weighted:
                    rater_counts(arrays[ITEM_RATERS], len(arrays[ITEM_RATERS]))
                scalars = MetricMean.scalars(metrics, self.weighted_by_key)
            except ValueError as err:
                self._reject(msg, f"bad update: {err}")
                continue
            if not self.row_weighted:  # each client counts once on every row
                arrays[ITEM_RATERS], weight = np.ones(template["item_bias"][0], np.float32), 1.0
            items_mean.add(arrays, weight)
            metrics_mean.add(scalars, weight)
        self._log_failures("aggregate_train")
        if items_mean.count == 0:
            return None, None
        return to_record(items_mean.result(self.server_lr)), MetricRecord(metrics_mean.result())

    def after_noise(self, arrays: ArrayRecord) -> ArrayRecord:
        """The server learning rate on the noised DP mean: applied before the noise, it would
        scale the sensitivity the noise was calibrated to."""
        return to_record(
            {
                name: (c + self.server_lr * (to_numpy(arrays[name]) - c)).astype(c.dtype)
                for name, c in self._current.items()
            }
        )
