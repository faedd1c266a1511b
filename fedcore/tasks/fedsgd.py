"""FedSGD (distributed gradient descent) as an algorithm on typed statistics.

Each sampled client sends the gradient of its mean local loss (its whole training set, or a
minibatch of ``train.batch-size`` drawn from its own generator) weighted by its number of
examples; the server takes the weighted mean, which is the gradient of the pooled loss, and
steps with SGD (``train.lr``, ``train.momentum``, ``train.weight-decay``: the server's
optimizer here, as in ``torch.optim.SGD``). One round is one step of gradient descent on the
pooled data. Under client-level DP every client weighs one, its gradient is clipped and
noised, and the server divides the noised sum by the planned cohort (DP-FedSGD, McMahan et al.
2018).

:func:`fedsgd` turns any classification :class:`~fedcore.tasks.base.Task` into this
algorithm; task ``fedsgd`` is the ``mlp`` task's model and data.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch.nn import functional as F

from fedcore import seeding
from fedcore.config import RunConfig
from fedcore.statistics import INTEGER, ArraySpec, Spec, Summed
from fedcore.tasks import mlp, model_shape
from fedcore.tasks.algorithm import Algorithm, RoundContext, State, dp_denominator, update_bound
from fedcore.tasks.base import ClientData, Task

EXAMPLES = "examples"  # the weight: a client's number of examples (1 each under DP)
MOMENTUM = "momentum/"  # prefix of the server's momentum buffers (never sent to a client)


def fedsgd(task: Task, name: str = "fedsgd") -> Algorithm:
    """FedSGD on ``task``'s data and model, with the cross-entropy loss."""

    @functools.lru_cache(maxsize=2)
    def model_of(cfg: RunConfig) -> torch.nn.Module:  # one per process, overwritten per call
        return task.build_model(cfg, model_shape(task, cfg), torch.Generator().manual_seed(0))

    def load(cfg: RunConfig, state: State) -> torch.nn.Module:
        model = model_of(cfg)  # (the server's momentum buffers in the state are not loaded)
        model.load_state_dict({k: torch.tensor(np.asarray(state[k])) for k in model.state_dict()})
        return model

    def init(cfg: RunConfig, data, rng: np.random.Generator) -> dict[str, np.ndarray]:
        # the model tasks' own initialisation, so FedSGD and FedAvg start from the same model
        generator = seeding.torch_generator(cfg.seed, seeding.MODEL_INIT)
        model = task.build_model(cfg, data, generator)
        state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
        if cfg.train.momentum > 0:
            state |= {MOMENTUM + k: np.zeros_like(v) for k, v in state.items()}
        return state

    def spec(cfg: RunConfig, state: State) -> Spec:
        """The gradient of every model array, weighted by the number of examples; under DP
        unweighted (every client weighs one, and the sum is divided by the cohort)."""
        dp = cfg.privacy.dp != "off"
        gradients = {
            k: ArraySpec(np.shape(v), bound=update_bound(cfg), weight=None if dp else EXAMPLES)
            for k, v in state.items()
            if not k.startswith(MOMENTUM)
        }
        if dp:
            return Spec.of(gradients)
        return Spec.of(gradients | {EXAMPLES: ArraySpec((), INTEGER, cfg.secagg.max_weight)})

    def client(state: State, data: ClientData, context: RoundContext, rng: np.random.Generator):
        cfg = context.cfg
        model = load(cfg, state)
        n = data.num_train
        if n == 0:
            raise ValueError("this client holds no training examples")
        x, y = data.x_train, data.y_train
        if cfg.train.batch_size < n:  # a minibatch, from the client's own generator
            rows = torch.from_numpy(rng.choice(n, cfg.train.batch_size, replace=False))
            x, y = x[rows], y[rows]
        model.train()
        model.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        params = dict(model.named_parameters())
        grads = {
            k: params[k].grad.detach().numpy().astype(np.float64)
            if k in params and params[k].grad is not None
            else np.zeros(np.shape(v))
            for k, v in model.state_dict().items()
        }
        if cfg.privacy.dp == "off":
            grads[EXAMPLES] = np.array(float(len(y)))
        return grads, {"train-loss": float(loss.detach())}

    def server(state: State, summed: Summed, cfg: RunConfig):
        """One step of SGD (momentum and weight decay as ``torch.optim.SGD``) on the mean
        gradient; a round whose summed weight is not positive leaves the state as it is."""
        t = cfg.train
        new = {}
        for k in summed.spec.names:
            if k == EXAMPLES:
                continue
            if cfg.privacy.dp != "off":  # DP-FedSGD: the noised sum over the cohort
                g = summed[k] / dp_denominator(cfg, summed)
            else:
                g = summed.mean(k)
            if np.isnan(g).any():
                return dict(state), {"skipped": 1.0}
            p = np.asarray(state[k], np.float64)
            g = g + t.weight_decay * p
            if t.momentum > 0:
                g = t.momentum * state[MOMENTUM + k] + g
                new[MOMENTUM + k] = g
            new[k] = (p - t.lr * g).astype(np.asarray(state[k]).dtype)
        return new, {}

    def evaluate(state: State, x, y, cfg: RunConfig) -> dict[str, float]:
        return task.evaluate(load(cfg, state), x, y)

    return Algorithm(
        name=name,
        load_data=task.load_data,
        init=init,
        spec=spec,
        client=client,
        server=server,
        evaluate=evaluate,
        check_config=task.check_config,
        load_server=task.load_server,
        server_only=(MOMENTUM,),
        sections=task.sections,
    )


TASK = fedsgd(mlp.TASK)
