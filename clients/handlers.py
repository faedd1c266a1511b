"""The ClientApp's message handlers: decode a message, run the task's client hook, reply.

The same handlers serve Flower's Ray simulation, the in-process engine and deployed
SuperNodes. A process keeps one model object per task and loads each incoming global model
into it, so the model is built once per worker, not once per client.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from torch import nn

from clients import privacy
from clients.policy import node_policy
from fedcore import seeding
from fedcore.arrays import load_into, to_numpy_dict, to_record
from fedcore.config import CLIENT_LEVEL_DP, RunConfig
from fedcore.datasets import DatasetError
from fedcore.datasets import node as node_data
from fedcore.keys import (
    ARRAYS,
    CONFIG,
    DATA_PATH,
    DP_EVENT,
    EPSILON,
    METRICS,
    NUM_EXAMPLES,
    PARTITION_ID,
    PROXIMAL_MU,
    SERVER_ROUND,
    SETUP_KEPT,
)
from fedcore.tasks import (
    Algorithm,
    ClientData,
    ClientUpdate,
    Task,
    TrainParams,
    get_task,
    model_shape,
)
from privacy.ledger import DpEvent
from privacy.mechanisms import privatize_update


class ClientInputError(ValueError):
    """The message or the node's setup cannot be used; the reply carries this text."""


@functools.lru_cache(maxsize=2)
def _worker_model(cfg: RunConfig) -> nn.Module:
    """The one model object this process trains; its weights are overwritten on every call."""
    task = get_task(cfg.task)
    return task.build_model(cfg, model_shape(task, cfg), torch.Generator().manual_seed(0))


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
    task = get_task(cfg.task)
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
    setup = get_task(cfg.task).setup
    if setup is None or not setup.needed(cfg):
        return part, pid
    kept = context.state.array_records.get(SETUP_KEPT)
    if kept is None:
        raise ClientInputError(
            f"this node has not received the release of {setup.name!r}, which the server "
            "runs before round 1; it has nothing to train on"
        )
    return setup.view(cfg, part, to_numpy_dict(kept)), pid


def _client_data(context: Context, cfg: RunConfig) -> tuple[ClientData, nn.Module]:
    """This node's data (:func:`client_data`) and the model object to train."""
    return client_data(context, cfg)[0], _worker_model(cfg)


def client_data(context: Context, cfg: RunConfig) -> tuple[ClientData, int]:
    """This node's data and its client id: from its own file (node config ``data-path``)
    or, in simulation and demos, its partition of the run's dataset."""
    task = get_task(cfg.task)
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


def _setup(msg: Message, context: Context, cfg: RunConfig) -> tuple[Task, ClientData, nn.Module]:
    task = get_task(cfg.task)
    client, model = _client_data(context, cfg)
    arrays = msg.content.array_records.get(ARRAYS)
    if arrays is None:
        raise ClientInputError(f"message has no ArrayRecord {ARRAYS!r}")
    try:
        load_into(model, arrays)
    except ValueError as err:
        raise ClientInputError(f"global model does not fit the task's model: {err}") from None
    return task, client, model


def message_config(msg: Message) -> ConfigRecord:
    return msg.content.config_records.get(CONFIG, ConfigRecord())


def handle_train(msg: Message, context: Context, cfg: RunConfig) -> Message:
    """Train the received global model on this node's partition and reply with the result."""
    task = get_task(cfg.task)
    if isinstance(task, Algorithm):  # typed statistics instead of a model update
        from clients.statistics import handle_statistics

        return handle_statistics(msg, context, cfg, task)
    policy = node_policy(context)
    policy.enforce(cfg)
    task, data, model = _setup(msg, context, cfg)
    config = message_config(msg)
    server_round = int(config.get(SERVER_ROUND, 0))
    params = TrainParams(
        epochs=cfg.train.local_epochs,
        batch_size=cfg.train.batch_size,
        lr=cfg.train.lr,
        momentum=cfg.train.momentum,
        weight_decay=cfg.train.weight_decay,
        proximal_mu=float(config.get(PROXIMAL_MU, 0.0)),
    )
    pid = context.node_config[PARTITION_ID]
    rng = seeding.client_generator(cfg.seed, server_round, pid)
    event = client_mechanism(cfg, task, data, params, server_round, pid)
    if event is None:  # "off", or "client": the server's DP strategy (or Flower's clipping
        update = task.train_one_client(model, data, params, rng)  # mod) clips and noises
        if cfg.privacy.dp != "off":
            update = _releasable(update, model, cfg)
        return _reply(msg, update, {})
    policy.check_noise(event.noise_multiplier)
    ledger = privacy.load_ledger(context)
    privacy.check_budget(cfg, ledger, event, policy.max_epsilon)  # before data is touched
    noise = (cfg.privacy.seeded_noise, cfg.seed, server_round, pid)
    if cfg.privacy.dp == "distributed":  # the clipping and secure-aggregation mods clip and
        update = task.train_one_client(model, data, params, rng)  # noise it on its way out
    elif event.mechanism == "dp-sgd":
        dp = privacy.dp_sgd_params(cfg, data.num_train)
        batches = seeding.batch_generator(*noise)  # not ``rng``: derived from the seed
        update = task.train_one_client_dp(
            model, data, params, dp, batches, seeding.noise_generator(*noise)
        )
    else:
        update = _train_local_dp(task, model, data, params, rng, event, seeding.noise_rng(*noise))
    ledger = ledger.record(event)
    privacy.save_ledger(context, ledger)
    extra = {DP_EVENT: privacy.event_record(event)}
    update = _releasable(update, model, cfg)
    return _reply(msg, update, extra, {EPSILON: privacy.spent(cfg, ledger)})


def client_mechanism(
    cfg: RunConfig,
    task: Task | Algorithm,
    data: ClientData,
    params: TrainParams | None,
    server_round: int,
    pid: int,
) -> DpEvent | None:
    """The DP mechanism this client applies this round (None if it applies none)."""
    common = {"round": server_round, "client": pid, "clip_norm": cfg.privacy.clip_norm}
    if cfg.privacy.dp in ("sample", "sample-distributed"):
        dp_sgd = task.dp_sgd if isinstance(task, Algorithm) else task.train_one_client_dp
        if not dp_sgd:
            raise ClientInputError(f"task {task.name!r} has no DP-SGD training; set privacy.dp")
        dp = privacy.dp_sgd_params(cfg, data.num_train)
        return DpEvent.gaussian(
            mechanism="dp-sgd",
            noise_multiplier=dp.noise_multiplier,
            sample_rate=dp.sample_rate,
            steps=dp.steps(params.epochs),
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


def _train_local_dp(
    task: Task,
    model: nn.Module,
    data: ClientData,
    params: TrainParams,
    rng: torch.Generator,
    event: DpEvent,
    noise_rng: np.random.Generator,
) -> ClientUpdate:
    """Local DP: train as usual, then clip the update of the model's arrays and noise it
    before it leaves (:func:`_releasable` then drops the rest)."""
    reference = {k: v.detach().clone() for k, v in model.state_dict().items()}
    update = task.train_one_client(model, data, params, rng)
    released, _ = privatize_update(
        {k: update.state[k].numpy() for k in reference},
        {k: v.numpy() for k, v in reference.items()},
        event.clip_norm,
        event.noise_multiplier,
        noise_rng,
    )
    return replace(update, state={k: torch.from_numpy(v) for k, v in released.items()})


def _releasable(update: ClientUpdate, model: nn.Module, cfg: RunConfig) -> ClientUpdate:
    """What a DP client may send: the model's arrays (clipped and noised here or by the
    server), without anything a task sends beside them and without its metrics: the loss is
    computed from the data without noise, and even the training time grows with the number
    of examples. Where the unit of privacy is the whole client, its number of examples goes
    too (sent as 1: under client-level DP every client weighs alike); example-level DP keeps
    it, as DP-SGD's accounting takes it as public."""
    return replace(
        update,
        state={k: update.state[k] for k in model.state_dict()},
        metrics={},
        num_examples=1 if cfg.privacy.dp in CLIENT_LEVEL_DP else update.num_examples,
    )


def _reply(
    msg: Message, update: ClientUpdate, records: dict, metrics: dict | None = None
) -> Message:
    record = MetricRecord({NUM_EXAMPLES: update.num_examples, **update.metrics, **(metrics or {})})
    content = RecordDict({ARRAYS: to_record(update.state), METRICS: record, **records})
    return Message(content, reply_to=msg)


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
    if isinstance(get_task(cfg.task), Algorithm):
        from clients.statistics import handle_evaluate_statistics

        return handle_evaluate_statistics(msg, context, cfg, get_task(cfg.task))
    task, data, model = _setup(msg, context, cfg)
    if len(data.y_test) == 0:
        raise ClientInputError("this node holds no test examples to evaluate on")
    metrics = task.evaluate(model, data.x_test, data.y_test)
    count = 1 if cfg.privacy.dp in CLIENT_LEVEL_DP else len(data.y_test)
    record = MetricRecord({NUM_EXAMPLES: count, **metrics})
    return Message(RecordDict({METRICS: record}), reply_to=msg)
