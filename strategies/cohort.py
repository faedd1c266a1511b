"""Who takes part in a round, the messages they get, and the mean of their evaluation metrics.

A :class:`Cohort` is the part of Flower's FedAvg that a strategy on typed statistics keeps:
sampling and message construction (``configure_train`` / ``configure_evaluate``) and the
weighted mean of the clients' evaluation metrics. fedcore changes two things about Flower's:

- cohorts come from a generator keyed by (seed, round), so a run is reproducible without
  Python's global RNG; under DP from the OS CSPRNG instead (``secret_sampling``), because
  amplification by sampling assumes nobody can recompute who was sampled, and the seed is
  published (in ``config.toml``, and to every node);
- ``sampling = "poisson"`` takes each node independently with probability ``fraction``,
  the sampling that DP amplification analyses.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from logging import INFO, WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log

from fedcore import seeding
from fedcore.config import RunConfig
from fedcore.keys import ACCURACY, ARRAYS, CONFIG, NUM_EXAMPLES, SERVER_ROUND
from strategies.aggregate import MetricMean, spread

_TRAIN, _EVALUATE = 0, 1


@dataclass
class Cohort:
    """Samples each round's clients and builds their messages.

    Attributes:
        fraction_train, fraction_evaluate: the share of connected nodes asked per round.
        min_train_nodes, min_evaluate_nodes: the smallest fixed-size cohort.
        min_available_nodes: how many nodes must connect before round 1.
        seed: the run seed; the cohort of round ``r`` is drawn from a generator keyed by
            (seed, r), unless ``secret_sampling``.
        secret_sampling: draw cohorts from the OS CSPRNG (set under DP).
        sampling: ``"fixed-size"`` (``max(fraction * n, minimum)`` without replacement) or
            ``"poisson"`` (each node with probability ``fraction``; training only).
        wait_seconds: how long to wait for ``min_available_nodes`` to connect (round 1).
    """

    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    min_train_nodes: int = 1
    min_evaluate_nodes: int = 1
    min_available_nodes: int = 1
    seed: int = 0
    secret_sampling: bool = False
    sampling: str = "fixed-size"
    wait_seconds: float = 300.0

    @classmethod
    def of(cls, cfg: RunConfig) -> Cohort:
        """The cohort ``cfg`` asks for: its fractions and minimums, and secret sampling
        under DP unless the experiments-only ``privacy.seeded-noise``."""
        return cls(
            fraction_train=cfg.train.fraction,
            fraction_evaluate=cfg.evaluate.fraction,
            min_train_nodes=cfg.train.min_clients,
            min_evaluate_nodes=1 if cfg.evaluate.fraction > 0 else 0,
            min_available_nodes=cfg.data.num_clients,
            seed=cfg.seed,
            secret_sampling=cfg.privacy.dp != "off" and not cfg.privacy.seeded_noise,
            sampling=cfg.train.sampling,
        )

    def sample(
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

    def configure_train(
        self,
        server_round: int,
        arrays: ArrayRecord,
        config: ConfigRecord,
        grid: Grid,
        key: str = ARRAYS,
    ) -> list[Message]:
        """A training message with ``arrays`` (as record ``key``) for each sampled node."""
        if self.fraction_train == 0.0:
            return []
        nodes = self.sample(grid, self.fraction_train, self.min_train_nodes, server_round, _TRAIN)
        return _messages(server_round, arrays, config, nodes, MessageType.TRAIN, key)

    def configure_evaluate(
        self,
        server_round: int,
        arrays: ArrayRecord,
        config: ConfigRecord,
        grid: Grid,
        key: str = ARRAYS,
    ) -> list[Message]:
        """An evaluation message with ``arrays`` (as record ``key``) for each sampled node."""
        if self.fraction_evaluate == 0.0:
            return []
        nodes = self.sample(
            grid, self.fraction_evaluate, self.min_evaluate_nodes, server_round, _EVALUATE
        )
        return _messages(server_round, arrays, config, nodes, MessageType.EVALUATE, key)


def _messages(
    server_round: int,
    arrays: ArrayRecord,
    config: ConfigRecord,
    node_ids: list[int],
    message_type: str,
    key: str = ARRAYS,
) -> list[Message]:
    config = ConfigRecord({**config, SERVER_ROUND: server_round})
    record = RecordDict({key: arrays, CONFIG: config})
    return [Message(record, dst_node_id=n, message_type=message_type) for n in node_ids]


def evaluation_mean(replies: Iterable[Message]) -> tuple[MetricRecord | None, list[str]]:
    """The clients' evaluation metrics weighted by their ``num-examples``, with the spread
    of their accuracy (``accuracy-<stat>``), and why each reply left out was left out."""
    metrics_mean, accuracies, failures = MetricMean(), [], []
    for msg in replies:
        node = msg.metadata.src_node_id
        if msg.has_error():
            failures.append(f"node {node}: {msg.error.reason}")
            continue
        records = list(msg.content.metric_records.values())
        if len(records) != 1 or NUM_EXAMPLES not in records[0]:
            failures.append(
                f"node {node}: malformed reply: expected one MetricRecord with {NUM_EXAMPLES!r}"
            )
            continue
        try:
            values = MetricMean.scalars(records[0], NUM_EXAMPLES)
            weight = MetricMean.weight(records[0], NUM_EXAMPLES, 0.0)
        except ValueError as err:
            failures.append(f"node {node}: bad metrics: {err}")
            continue
        if weight > 0:
            metrics_mean.add(values, weight)
            if ACCURACY in values:
                accuracies.append(values[ACCURACY])
    for reason in failures:
        log(WARNING, "aggregate_evaluate: rejected reply from %s", reason)
    mean = metrics_mean.result()
    if not mean:
        return None, failures
    record = MetricRecord(mean)
    for name, value in spread(accuracies).items():
        record[f"{ACCURACY}-{name}"] = value
    return record, failures
