"""The ClientApp's message handlers and what they read of the node: its data (a partition
of the run's dataset, or the node's own file), the message's config, and the DP mechanism it
applies this round.

The same handlers serve Flower's Ray simulation, the in-process engine and deployed
SuperNodes; the algorithm's client hook and the client's privacy layers are in
:mod:`clients.statistics`.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from flwr.app import ConfigRecord, Context, Message

from clients import privacy
from clients.policy import node_policy
from fedcore.arrays import to_numpy_dict
from fedcore.config import RunConfig
from fedcore.datasets import DatasetError
from fedcore.datasets import node as node_data
from fedcore.keys import CONFIG, DATA_PATH, PARTITION_ID, SETUP_KEPT
from fedcore.tasks import Algorithm, ClientData, get_algorithm
from privacy.ledger import DpEvent


class ClientInputError(ValueError):
    """The message or the node's setup cannot be used; the reply carries this text."""


@functools.lru_cache(maxsize=4)
def _node_file(path: str, mtime: float, dataset: str) -> ClientData:
    arrays = {
        k: torch.from_numpy(v) for k, v in node_data.load_node_file(Path(path), dataset).items()
    }
    return ClientData(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"])


def raw_partition(context: Context, cfg: RunConfig) -> tuple[object, int]:
    """This node's partition of the run's dataset (simulation and demos) and its id, as the
    task loads it: before any setup's release."""
    pid = context.node_config.get(PARTITION_ID)
    task = get_algorithm(cfg.task)
    if DATA_PATH in context.node_config and not task.node_files:  # never a silent stand-in
        raise ClientInputError(
            f"this node holds its own data file ({DATA_PATH}), which task {task.name!r} does "
            "not read; it would train on a partition of the run's dataset instead"
        )
    data = task.load_data(cfg)
    if not isinstance(pid, int) or not 0 <= pid < len(data.clients):
        raise ClientInputError(
            f"node config {PARTITION_ID}={pid!r} is not a partition of this run "
            f"(0..{len(data.clients) - 1})"
        )
    return data.clients[pid], pid


def partition_data(context: Context, cfg: RunConfig) -> tuple[ClientData, int]:
    """This node's partition of the run's dataset and its id; for a task with a setup
    (:mod:`fedcore.tasks.setup`), what it trains on once it kept the setup's release."""
    part, pid = raw_partition(context, cfg)
    setup = get_algorithm(cfg.task).setup
    if setup is None or not setup.needed(cfg):
        return part, pid
    kept = context.state.array_records.get(SETUP_KEPT)
    if kept is None:
        raise ClientInputError(
            f"this node has not received the release of {setup.name!r}, which the server "
            "runs before round 1; it has nothing to train on"
        )
    return setup.view(cfg, part, to_numpy_dict(kept)), pid


def client_data(context: Context, cfg: RunConfig) -> tuple[ClientData, int]:
    """This node's data and its client id: from its own file (node config ``data-path``)
    or, in simulation and demos, its partition of the run's dataset."""
    task = get_algorithm(cfg.task)
    pid = context.node_config.get(PARTITION_ID)
    path = context.node_config.get(DATA_PATH)
    if path is not None:
        if not isinstance(pid, int) or pid < 0:
            raise ClientInputError(
                f"node config {PARTITION_ID}={pid!r} must be this client's id (an integer >= 0)"
            )
        if not task.node_files:
            raise ClientInputError(
                f"this node holds its own data file ({DATA_PATH}), which task {task.name!r} "
                "does not read"
            )
        file = Path(str(path))
        mtime = file.stat().st_mtime if file.exists() else 0.0  # a replaced file is re-read
        try:
            return _node_file(str(file), mtime, cfg.data.dataset), pid
        except DatasetError as err:
            raise ClientInputError(str(err)) from None
    return partition_data(context, cfg)


def message_config(msg: Message) -> ConfigRecord:
    return msg.content.config_records.get(CONFIG, ConfigRecord())


def handle_train(msg: Message, context: Context, cfg: RunConfig) -> Message:
    """Run the task's algorithm's client hook on this node's data and reply with its
    statistics, through the client's privacy layers (:mod:`clients.statistics`)."""
    from clients.statistics import handle_statistics  # it imports this module

    return handle_statistics(msg, context, cfg, get_algorithm(cfg.task))


def client_mechanism(
    cfg: RunConfig, algorithm: Algorithm, data: ClientData, epochs: int, server_round: int, pid: int
) -> DpEvent | None:
    """The DP mechanism this client applies this round (None if it applies none)."""
    common = {"round": server_round, "client": pid, "clip_norm": cfg.privacy.clip_norm}
    if cfg.privacy.dp in ("sample", "sample-distributed"):
        if not algorithm.dp_sgd:
            raise ClientInputError(
                f"task {algorithm.name!r} has no DP-SGD training; set privacy.dp"
            )
        dp = privacy.dp_sgd_params(cfg, data.num_train)
        return DpEvent.gaussian(
            mechanism="dp-sgd",
            noise_multiplier=dp.noise_multiplier,
            sample_rate=dp.sample_rate,
            steps=dp.steps(epochs),
            sampling="poisson",
            neighbouring="example",
            **common,
        )
    if cfg.privacy.dp in ("local", "distributed"):
        # Distributed DP: the sum this client's update enters carries at least the planned
        # noise (the server unmasks no smaller sum), and the server, which picks the cohort,
        # knows the client took part: against it the round counts without sampling
        # amplification, under zero-out neighbouring (its data replaced by none, its clipped
        # update by zero: one clip norm, accounted as add/remove-one).
        return DpEvent.gaussian(
            mechanism="gaussian",
            noise_multiplier=privacy.client_level_noise(cfg),
            sample_rate=1.0,
            steps=1,
            sampling="none",
            neighbouring="local" if cfg.privacy.dp == "local" else "client",
            **common,
        )
    return None


def handle_evaluate(msg: Message, context: Context, cfg: RunConfig) -> Message:
    """Evaluate the received global model on this node's local test split.

    Under DP no DP mechanism covers these metrics, so the configuration refuses client
    evaluation unless ``privacy.clear-evaluation`` (simulation only) lets the experimenter
    see them; even then a client-level-DP node never sends its number of examples."""
    node_policy(context).enforce(cfg)
    if cfg.privacy.dp != "off" and not cfg.privacy.clear_evaluation:
        raise ClientInputError(
            f"this node evaluates nothing under privacy.dp = {cfg.privacy.dp!r}: its test-set "
            f"size and un-noised loss and accuracy are covered by no DP mechanism"
        )
    from clients.statistics import handle_evaluate_statistics

    return handle_evaluate_statistics(msg, context, cfg, get_algorithm(cfg.task))
