"""A reference run: Flower's own strategy and round loop on a task, for comparison.

:func:`run_flower` runs ``cfg``'s task (a :class:`~fedcore.tasks.Task`) the way a Flower user
writes it: ``flwr.serverapp.strategy``'s strategy of ``strategy.name`` drives the rounds with
its own ``Strategy.start``, and a ClientApp loads the global weights, trains its partition
with the generator fedcore gives that client (DP-SGD: the seeded batches and noise) and
replies its weights and example count. fedcore runs every Task as FedAvg on typed statistics
(:mod:`fedcore.tasks.fedavg`); tests and benchmarks hold it equal to this run.
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import strategy as flwr_strategy

from clients.privacy import dp_sgd_params
from fedcore import seeding
from fedcore.arrays import load_into, to_record
from fedcore.config import RunConfig
from fedcore.keys import ARRAYS, CONFIG, METRICS, NUM_EXAMPLES, PARTITION_ID, SERVER_ROUND
from fedcore.tasks import Task, TrainParams, get_task, model_shape
from simulations.engines.inprocess import InProcessGrid


def flower_strategy(cfg: RunConfig) -> flwr_strategy.Strategy:
    """Flower's own strategy of ``cfg.strategy.name``, every client every round."""
    s, common = cfg.strategy, {"fraction_evaluate": 0.0, "min_available_nodes": 1}
    adaptive = dict(eta=s.eta, eta_l=cfg.train.lr, beta_1=s.beta_1, beta_2=s.beta_2, tau=s.tau)
    return {
        "fedavg": lambda: flwr_strategy.FedAvg(**common),
        "fedprox": lambda: flwr_strategy.FedProx(**common, proximal_mu=s.proximal_mu),
        "fedavgm": lambda: flwr_strategy.FedAvgM(
            **common, server_learning_rate=s.server_lr, server_momentum=s.server_momentum
        ),
        "fedadam": lambda: flwr_strategy.FedAdam(**common, **adaptive),
        "fedyogi": lambda: flwr_strategy.FedYogi(**common, **adaptive),
        "fedadagrad": lambda: flwr_strategy.FedAdagrad(
            **common, eta=s.eta, eta_l=cfg.train.lr, tau=s.tau
        ),
        "fedmedian": lambda: flwr_strategy.FedMedian(**common),
        "fedtrimmedavg": lambda: flwr_strategy.FedTrimmedAvg(**common, beta=s.trim_beta),
        "krum": lambda: flwr_strategy.Krum(**common, num_malicious_nodes=s.num_malicious),
        "multikrum": lambda: flwr_strategy.MultiKrum(
            **common,
            num_malicious_nodes=s.num_malicious,
            num_nodes_to_select=s.krum_select or int(cfg.planned_cohort) - s.num_malicious,
        ),
        "bulyan": lambda: flwr_strategy.Bulyan(**common, num_malicious_nodes=s.num_malicious),
    }[s.name]()


def run_flower(cfg: RunConfig) -> ArrayRecord:
    """The final model of ``cfg``'s task under Flower's strategy and ``Strategy.start``: each
    client loads the global weights, trains its partition with the generator fedcore gives
    it (DP-SGD: the seeded batches and noise), and replies its weights and example count."""
    task = get_task(cfg.task)
    if not isinstance(task, Task):
        raise TypeError(f"task {cfg.task!r} is an algorithm; Flower's strategies take a Task")
    data, shape = task.load_data(cfg), model_shape(task, cfg)
    app = ClientApp()

    @app.train()
    def train(msg: Message, context) -> Message:
        pid, config = context.node_config[PARTITION_ID], msg.content[CONFIG]
        server_round = int(config[SERVER_ROUND])
        model = task.build_model(cfg, shape, torch.Generator().manual_seed(0))
        load_into(model, msg.content[ARRAYS])
        t, part = cfg.train, data.clients[pid]
        mu = float(config.get("proximal-mu", 0.0))
        params = TrainParams(t.local_epochs, t.batch_size, t.lr, t.momentum, t.weight_decay, mu)
        if cfg.privacy.dp == "sample":
            keys = (True, cfg.seed, server_round, pid)  # privacy.seeded-noise
            dp = dp_sgd_params(cfg, part.num_train)
            batches, noise = seeding.batch_generator(*keys), seeding.noise_generator(*keys)
            update = task.train_one_client_dp(model, part, params, dp, batches, noise)
        else:
            generator = seeding.client_generator(cfg.seed, server_round, pid)
            update = task.train_one_client(model, part, params, generator)
        content = RecordDict(
            {
                ARRAYS: to_record(update.state),
                METRICS: MetricRecord({NUM_EXAMPLES: update.num_examples}),
            }
        )
        return Message(content, reply_to=msg)

    init = task.build_model(cfg, shape, seeding.torch_generator(cfg.seed, seeding.MODEL_INIT))
    with InProcessGrid(cfg, client_app=app) as grid:
        result = flower_strategy(cfg).start(
            grid, ArrayRecord(init.state_dict()), num_rounds=cfg.train.rounds
        )
    return result.arrays
