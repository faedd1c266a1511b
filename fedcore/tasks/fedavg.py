"""FedAvg, FedProx and Flower's server optimizers as an algorithm on typed statistics.

Each sampled client trains the global model on its own data (``task.train_one_client``, the
FedProx proximal term added under ``strategy.name = "fedprox"``; Li et al. 2020) and sends its
update ``local - global``, weighted by its number of examples; the server takes the weighted
mean and steps with the optimizer ``strategy.name`` names (:mod:`fedcore.optimizers`: FedAvg,
McMahan et al. 2017; FedAvgM; FedAdam, FedYogi, FedAdagrad). Under client-level DP every
client weighs one, its update is clipped and noised by the privacy layers, and the server
divides the noised sum by the planned cohort (DP-FedAvg, McMahan et al. 2018); the optimizer
then post-processes the release, so a server optimizer is sound under DP here (wrapped in
Flower's DP strategies it would step on the un-noised mean). Under sample-level DP a client
trains with the task's DP-SGD (``RoundContext.example_dp``: its batches and noise from the
node's secret generators) and its update keeps its example-count weight.

The optimizer's buffers are server state (``server/...`` arrays), never sent to a client.
Under a robust aggregator (``fedmedian``, ``fedtrimmedavg``, ``krum``: :mod:`fedcore.robust`)
the strategy hands the server the robust location of the clients' updates instead of their
mean, and the step is FedAvg's, as in Flower.

:func:`fedavg` turns any :class:`~fedcore.tasks.base.Task` whose weights are all floating
point into this algorithm, its setup included (FedGCN's pre-communication):
:func:`fedcore.tasks.get_algorithm` runs every Task (``mlp``, ``gcn``, or a user's own) so.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from fedcore import optimizers, robust, seeding
from fedcore.arrays import load_arrays
from fedcore.config import CLIENT_LEVEL_DP, RunConfig, StrategyConfig
from fedcore.devices import on_device, torch_device
from fedcore.statistics import INTEGER, ArraySpec, Spec
from fedcore.tasks import model_shape
from fedcore.tasks.algorithm import Algorithm, RoundContext, State, dp_denominator, update_bound
from fedcore.tasks.base import ClientData, Task, TrainParams

EXAMPLES = "examples"  # the weight: a client's number of examples (1 each under DP)
SERVER = "server/"  # prefix of the optimizer's state: server/<buffer>/<weight name>
STEPS = SERVER + "steps"  # how many steps the optimizer took (with buffers only)


def _optimizer(cfg: RunConfig) -> StrategyConfig:
    """The server optimizer's settings: the run's, or FedAvg's step (new = global + the
    aggregate) after a robust aggregator, as Flower's FedMedian, FedTrimmedAvg and Krum."""
    s = cfg.strategy
    return s if s.name in optimizers.OPTIMIZERS else StrategyConfig(name="fedavg")


def _buffer(name: str, key: str) -> str:
    return f"{SERVER}{name}/{key}"


def fedavg(task: Task, name: str = "fedavg", wire_dtype: str = "float32") -> Algorithm:
    """FedAvg (or FedProx, or a server optimizer) on ``task``'s data, model and training.

    ``wire_dtype``: what a client sends its update in without secure aggregation; float32
    (the default) suits a float32 model, whose update has no more precision to carry."""

    @functools.lru_cache(maxsize=2)
    def model_of(cfg: RunConfig) -> torch.nn.Module:  # one per process, overwritten per call
        model = task.build_model(cfg, model_shape(task, cfg), torch.Generator().manual_seed(0))
        return model.to(torch_device(cfg.engine.device))

    def weights(state: State) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in state.items() if not k.startswith(SERVER)}

    def load(cfg: RunConfig, state: State) -> torch.nn.Module:
        model = model_of(cfg)
        load_arrays(model, weights(state))
        return model

    def init(cfg: RunConfig, shape, rng: np.random.Generator) -> dict[str, np.ndarray]:
        # the model task's own initialisation: this path and Flower's start from one model
        generator = seeding.torch_generator(cfg.seed, seeding.MODEL_INIT)
        model = task.build_model(cfg, shape, generator)
        state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
        for k, v in state.items():
            if not np.issubdtype(v.dtype, np.floating):
                raise ValueError(f"{name}: weight {k!r} is {v.dtype}; an update is a real array")
        model_weights = dict(state)
        for buffer in optimizers.buffers(_optimizer(cfg)):
            state |= {_buffer(buffer, k): np.zeros_like(v) for k, v in model_weights.items()}
        if optimizers.buffers(_optimizer(cfg)):
            state[STEPS] = np.zeros(())
        return state

    def spec(cfg: RunConfig, state: State) -> Spec:
        """Every weight's update, weighted by the number of examples; under client-level DP
        unweighted (every client weighs one)."""
        dp = cfg.privacy.dp in CLIENT_LEVEL_DP
        weight = None if dp else EXAMPLES
        updates = {
            k: ArraySpec(np.shape(v), bound=update_bound(cfg), weight=weight)
            for k, v in weights(state).items()
        }
        if dp:
            return Spec.of(updates)
        return Spec.of(updates | {EXAMPLES: ArraySpec((), INTEGER, cfg.secagg.max_weight)})

    def client(state: State, data: ClientData, context: RoundContext, rng: np.random.Generator):
        cfg, t = context.cfg, context.cfg.train
        mu = cfg.strategy.proximal_mu if cfg.strategy.name == "fedprox" else 0.0
        params = TrainParams(t.local_epochs, t.batch_size, t.lr, t.momentum, t.weight_decay, mu)
        glob, dp = weights(state), context.example_dp
        if dp is not None:  # DP-SGD, its batches and noise from the node's secret generators
            model = load(cfg, state)
            update = task.train_one_client_dp(model, data, params, dp.params, dp.batches, dp.noise)
        else:
            # the client's seeded generator (not what a DP guarantee rests on: client-level
            # DP hides the whole update, whatever its batches)
            generator = seeding.client_generator(
                cfg.seed, context.server_round, context.partition_id
            )
            data = on_device(data, torch_device(cfg.engine.device))
            update = task.train_one_client(load(cfg, state), data, params, generator)
        stats = {
            k: update.state[k].detach().cpu().numpy().astype(np.float64) - np.asarray(v, np.float64)
            for k, v in glob.items()
        }
        if cfg.privacy.dp not in CLIENT_LEVEL_DP:
            stats[EXAMPLES] = np.array(float(update.num_examples))
        return stats, dict(update.metrics)

    def server(state: State, summed, cfg: RunConfig):
        """The optimizer's step on the mean update; a round whose mean is not finite (no
        weight summed), or whose step leaves the model's dtype's range (one client's update
        of 1e38s, which float64 holds and float32 does not), leaves the state as it is."""
        glob = weights(state)
        denominator = dp_denominator(cfg, summed) if cfg.privacy.dp in CLIENT_LEVEL_DP else None
        update = {k: summed[k] / denominator if denominator else summed.mean(k) for k in glob}
        if any(not np.isfinite(u).all() for u in update.values()):
            return dict(state), {"skipped": 1.0}
        buffers = {
            b: {k: np.asarray(state[_buffer(b, k)], np.float64) for k in glob}
            for b in optimizers.buffers(_optimizer(cfg))
        }
        # the optimizer's step count (FedAdam's bias correction): the round, as in Flower,
        # unless an earlier round aggregated nothing
        step = int(state[STEPS]) + 1 if STEPS in state else 1
        as_float = {k: v.astype(np.float64) for k, v in glob.items()}
        new, new_buffers = optimizers.server_step(_optimizer(cfg), step, as_float, update, buffers)
        with np.errstate(over="ignore"):  # (checked below)
            out = {k: new[k].astype(glob[k].dtype) for k in glob}
            for b, arrays in new_buffers.items():
                out |= {_buffer(b, k): v.astype(glob[k].dtype) for k, v in arrays.items()}
        if any(not np.isfinite(v).all() for v in out.values()):  # past float32's range
            return dict(state), {"skipped": 1.0}
        if STEPS in state:
            out[STEPS] = np.array(float(step))
        return out, {}

    def evaluate(state: State, x, y, cfg: RunConfig) -> dict[str, float]:
        device = torch_device(cfg.engine.device)
        if device.type != "cpu":  # (a task's test set may be no tensor: gcn's is a graph)
            x, y = x.to(device), y.to(device)
        return task.evaluate(load(cfg, state), x, y)

    def evaluate_client(state: State, data: ClientData, context: RoundContext):
        data = on_device(data, torch_device(context.cfg.engine.device))
        return task.evaluate(load(context.cfg, state), data.x_test, data.y_test)

    def check_config(cfg: RunConfig) -> None:
        if task.check_config is not None:
            task.check_config(cfg)

    return Algorithm(
        name=name,
        load_data=task.load_data,
        init=init,
        spec=spec,
        client=client,
        server=server,
        evaluate=evaluate,
        evaluate_client=evaluate_client,
        check_config=check_config,
        setup=task.setup,
        load_server=task.load_server,
        strategies=optimizers.OPTIMIZERS + robust.ROBUST,
        server_only=(SERVER,),
        dp_sgd=task.train_one_client_dp is not None,
        node_files=task.node_files,
        wire_dtype=wire_dtype,
        sections=task.sections,
        compressible=True,
    )
