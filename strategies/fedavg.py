"""Flower's FedAvg with the three things fedcore changes: seeded cohort sampling, streaming
aggregation that rejects bad updates one by one, and the spread of client metrics.

Every other fedcore strategy lists this class after Flower's, e.g.
``class FedAdam(flwr.FedAdam, FedAvg)``. Python's method order then puts it between Flower's
strategy and Flower's FedAvg, so Flower's FedAdam/FedProx/FedAvgM logic runs unchanged on top
of these hooks, and robust strategies (median, Krum) keep their own ``aggregate_train``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from logging import INFO, WARNING

import numpy as np
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp import strategy as flwr_strategy
from flwr.supercore import log

from fedcore import seeding
from fedcore.arrays import to_numpy_dict, to_record
from fedcore.keys import ACCURACY, SERVER_ROUND
from strategies.aggregate import MetricMean, WeightedMean, check_update, spread

_TRAIN, _EVALUATE = 0, 1


class FedAvg(flwr_strategy.FedAvg):
    """FedAvg (McMahan et al. 2017) weighted by each client's ``num-examples``.

    Takes Flower's ``FedAvg`` arguments. Two attributes are set after construction (Flower's
    subclasses pass only their own arguments up the chain):

    Attributes:
        seed: run seed; the cohort of round ``r`` is drawn from a generator keyed by
            (seed, r), so a run is reproducible without touching Python's global RNG.
        secret_sampling: set under DP: cohorts come from the OS CSPRNG instead, because
            amplification by sampling assumes nobody can recompute who was sampled, and the
            seed is published (in ``config.toml``, and to every node).
        wait_seconds: how long to wait for ``min_available_nodes`` to connect (round 1).
        sampling: ``"fixed-size"`` (a cohort of ``max(fraction * n, min_train_nodes)``
            without replacement) or ``"poisson"`` (each node independently with probability
            ``fraction``, the sampling that DP amplification analyses).
        dp_cohort_size: set for client-level DP (DP-FedAvg, McMahan et al. 2018): every reply
            weighs 1 and the model moves by the *sum* of updates divided by this expected
            cohort size, not by the number of replies. One client then moves the model by at
            most clip / dp_cohort_size however many clients reply or drop out, which is the
            sensitivity the DP noise is calibrated to.
    """

    seed: int = 0
    secret_sampling: bool = False
    wait_seconds: float = 300.0
    sampling: str = "fixed-size"
    dp_cohort_size: float | None = None

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._template: dict | None = None
        self._current: dict[str, np.ndarray] | None = None
        self.last_failures: list[str] = []

    # -- sampling -------------------------------------------------------------------------
    def sample_cohort(
        self, grid: Grid, fraction: float, minimum: int, server_round: int, purpose: int
    ) -> list[int]:
        """Node ids for this round: ``max(fraction * available, minimum)`` without
        replacement, or with ``sampling = "poisson"`` each node with probability ``fraction``
        (the minimum does not apply: it would break the Poisson analysis)."""
        deadline = time.monotonic() + self.wait_seconds
        poisson = self.sampling == "poisson" and purpose == _TRAIN
        # The run starts once every node is connected; later rounds go on with the nodes
        # that are (a node that died may rejoin when it can).
        available = self.min_available_nodes if server_round == 1 else 1
        while True:
            nodes = sorted(grid.get_node_ids())
            size = 0 if poisson else max(int(len(nodes) * fraction), minimum)
            if len(nodes) >= max(size, available):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {len(nodes)} nodes connected after {self.wait_seconds:.0f} s; "
                    f"need {max(size, available)}"
                )
            log(
                INFO, "Waiting for nodes: %d connected, %d needed", len(nodes), max(size, available)
            )
            time.sleep(1.0)
        rng = seeding.secret_rng(
            not self.secret_sampling, self.seed, seeding.SAMPLING, server_round, purpose
        )
        if poisson:
            chosen = np.flatnonzero(rng.random(len(nodes)) < fraction)
        else:
            chosen = rng.choice(len(nodes), size=min(size, len(nodes)), replace=False)
        return [nodes[i] for i in sorted(chosen)]

    def _messages(
        self,
        server_round: int,
        arrays: ArrayRecord,
        config: ConfigRecord,
        node_ids: list[int],
        message_type: str,
    ) -> list[Message]:
        config[SERVER_ROUND] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(record, node_ids, message_type)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self.fraction_train == 0.0:
            return []
        self._template = {k: (tuple(a.shape), a.dtype) for k, a in arrays.items()}
        self._current = to_numpy_dict(arrays)
        nodes = self.sample_cohort(
            grid, self.fraction_train, self.min_train_nodes, server_round, _TRAIN
        )
        return self._messages(server_round, arrays, config, nodes, MessageType.TRAIN)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self.fraction_evaluate == 0.0:
            return []
        nodes = self.sample_cohort(
            grid, self.fraction_evaluate, self.min_evaluate_nodes, server_round, _EVALUATE
        )
        return self._messages(server_round, arrays, config, nodes, MessageType.EVALUATE)

    # -- aggregation ----------------------------------------------------------------------
    def _contents(self, replies: Iterable[Message], with_arrays: bool):
        """Yield (message, arrays, metrics, weight) of well-formed replies; record why the
        others were not used in ``last_failures``."""
        self.last_failures = []
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error():
                self.last_failures.append(f"node {node}: {msg.error.reason}")
                continue
            metrics = list(msg.content.metric_records.values())
            arrays = list(msg.content.array_records.values())
            problem = None
            if len(metrics) != 1 or self.weighted_by_key not in metrics[0]:
                problem = f"expected one MetricRecord with {self.weighted_by_key!r}"
            elif with_arrays and len(arrays) != 1:
                problem = "expected exactly one ArrayRecord"
            if problem:
                self.last_failures.append(f"node {node}: malformed reply: {problem}")
                continue
            weight = float(metrics[0][self.weighted_by_key])
            yield msg, arrays[0] if arrays else None, metrics[0], weight

    def _reject(self, msg: Message, reason: str) -> None:
        self.last_failures.append(f"node {msg.metadata.src_node_id}: {reason}")

    def _check_and_log_replies(
        self, replies: Iterable[Message], is_train: bool, validate: bool = True
    ) -> tuple[list[Message], list[Message]]:
        """Flower's reply filter, used by the strategies that need every update (median,
        trimmed mean, Krum): here it also drops updates that are malformed, mis-shaped or
        not finite, so those strategies never aggregate a corrupt update either."""
        kept = []
        for msg, record, _, weight in self._contents(replies, with_arrays=is_train):
            try:
                if is_train:
                    check_update(to_numpy_dict(record), weight, self._template)
            except ValueError as err:
                self._reject(msg, f"bad update: {err}")
                continue
            kept.append(msg)
        self._log_failures("aggregate_train" if is_train else "aggregate_evaluate")
        return kept, []

    def _log_failures(self, stage: str) -> None:
        for reason in self.last_failures:
            log(WARNING, "%s: rejected reply from %s", stage, reason)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        arrays_mean, metrics_mean = WeightedMean(self._template), MetricMean()
        for msg, record, metrics, weight in self._contents(replies, with_arrays=True):
            if self.dp_cohort_size is not None:
                weight = 1.0
            try:
                scalars = MetricMean.scalars(metrics, self.weighted_by_key)
                arrays_mean.add(to_numpy_dict(record), weight)
            except ValueError as err:
                self._reject(msg, f"bad update: {err}")
                continue
            metrics_mean.add(scalars, weight)
        self._log_failures("aggregate_train")
        if self.dp_cohort_size is not None:
            return self._fixed_denominator(arrays_mean), MetricRecord(metrics_mean.result())
        if arrays_mean.count == 0 or arrays_mean.total_weight <= 0:
            return None, None
        return to_record(arrays_mean.result()), MetricRecord(metrics_mean.result())

    def _fixed_denominator(self, arrays_mean: WeightedMean) -> ArrayRecord:
        """``current + sum_i (w_i - current) / dp_cohort_size``; with no replies, the current
        model itself (a zero sum), so the DP wrapper still releases the noised round."""
        k, sums = arrays_mean.count, arrays_mean.sums()
        if k == 0:
            return to_record(self._current)
        return to_record(
            {
                name: (c + (sums[name] - k * c.astype(np.float64)) / self.dp_cohort_size).astype(
                    c.dtype
                )
                for name, c in self._current.items()
            }
        )

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        metrics_mean, accuracies = MetricMean(), []
        for msg, _, metrics, weight in self._contents(replies, with_arrays=False):
            try:
                values = MetricMean.scalars(metrics, self.weighted_by_key)
            except ValueError as err:
                self._reject(msg, f"bad metrics: {err}")
                continue
            if weight > 0:
                metrics_mean.add(values, weight)
                if ACCURACY in values:
                    accuracies.append(values[ACCURACY])
        self._log_failures("aggregate_evaluate")
        mean = metrics_mean.result()
        if not mean:
            return None
        record = MetricRecord(mean)
        for name, value in spread(accuracies).items():
            record[f"{ACCURACY}-{name}"] = value
        return record
