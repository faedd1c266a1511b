"""A task of your own, outside fedcore: a custom PyTorch model on a custom dataset.

Each client holds a slice of scikit-learn's two-moons data, cut along the first coordinate
(feature skew: every client sees a different part of the plane); the model is a small
residual network written here. Nothing in fedcore is edited: a scenario names the task by
its import path, and this folder only has to be on the Python path.

    PYTHONPATH=examples .venv/bin/fedcore simulate --set task=moons_task:TASK
    PYTHONPATH=examples .venv/bin/python -c "import fedcore; print(fedcore.simulate(
        {'data': {'num-clients': 8}}, task='moons_task:TASK').summary['final_metrics'])"

The hooks are the contract of :class:`fedcore.tasks.base.Task`: ``load_data`` builds every
client's tensors and the server's test set from the run config, ``build_model`` the model
from an explicit generator, ``train_one_client`` a local update, ``evaluate`` the metrics,
and ``load_server`` what the server holds (the model's shape, its test set) without the
clients' data. The task's own settings are its table ``[moons]`` (``--set moons.width=16``),
validated with the rest of the run config.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.datasets import make_moons
from torch import nn
from torch.nn import functional as F

from fedcore.config import RunConfig, option
from fedcore.tasks.base import (
    ClientData,
    ClientUpdate,
    FederatedData,
    ModelShape,
    ServerData,
    Task,
    TrainParams,
)


@dataclass(frozen=True)
class MoonsOptions:
    """Table ``[moons]``: this task's own settings."""

    width: int = option(32, ge=1, doc="the residual network's width")
    noise: float = option(0.2, ge=0, doc="std of the Gaussian noise on the two moons")


class ResidualNet(nn.Module):
    """x -> Linear -> (x + MLP(x)) -> Linear: a residual block on 2-D inputs."""

    def __init__(self, width: int, generator: torch.Generator) -> None:
        super().__init__()
        self.stem = nn.Linear(2, width)
        self.block = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width))
        self.head = nn.Linear(width, 2)
        with torch.no_grad():  # from the run's generator, not torch's global RNG
            for p in self.parameters():
                p.uniform_(-0.5, 0.5, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.stem(x))
        return self.head(h + self.block(h))


def load_data(cfg: RunConfig) -> FederatedData:
    """Two moons (noise ``moons.noise``), clients cut along the first coordinate, 20% of
    each kept for its own evaluation; the server tests on a fresh draw."""
    x, y = make_moons(3000, noise=cfg.moons.noise, random_state=cfg.seed)
    server = load_server(cfg)
    rng = np.random.default_rng(cfg.seed)
    order = np.argsort(x[:, 0] + rng.normal(0, 0.3, len(x)))  # mostly by position
    clients = []
    for part in np.array_split(order, cfg.data.num_clients):
        cut = int(0.8 * len(part))
        train, test = part[:cut], part[cut:]
        clients.append(
            ClientData(
                torch.tensor(x[train], dtype=torch.float32),
                torch.tensor(y[train]),
                torch.tensor(x[test], dtype=torch.float32),
                torch.tensor(y[test]),
            )
        )
    return FederatedData(
        clients=tuple(clients),
        x_test=server.x_test,
        y_test=server.y_test,
        num_features=2,
        num_classes=2,
        report={"dataset": "two moons", "clients": [len(c.y_train) for c in clients]},
    )


def load_server(cfg: RunConfig) -> ServerData:
    """What the server holds: the model's shape and its own test set, a fresh draw (so the
    server never generates, let alone partitions, the clients' data)."""
    test_x, test_y = make_moons(1000, noise=cfg.moons.noise, random_state=cfg.seed + 1)
    return ServerData(2, 2, torch.tensor(test_x, dtype=torch.float32), torch.tensor(test_y))


def build_model(cfg: RunConfig, data: ModelShape, generator: torch.Generator) -> nn.Module:
    return ResidualNet(cfg.moons.width, generator)


def train_one_client(
    model: nn.Module, data: ClientData, params: TrainParams, rng: torch.Generator
) -> ClientUpdate:
    """Minibatch SGD for ``params.epochs`` epochs, batches shuffled by the client's ``rng``."""
    optimizer = torch.optim.SGD(model.parameters(), lr=params.lr, momentum=params.momentum)
    model.train()
    losses = []
    for _ in range(params.epochs):
        for batch in torch.randperm(data.num_train, generator=rng).split(params.batch_size):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(data.x_train[batch]), data.y_train[batch])
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return ClientUpdate(state, data.num_train, {"train-loss": float(np.mean(losses))})


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    model.eval()
    logits = model(x)
    return {
        "loss": float(F.cross_entropy(logits, y)),
        "accuracy": float((logits.argmax(1) == y).float().mean()),
    }


TASK = Task(
    name="moons",
    load_data=load_data,
    build_model=build_model,
    train_one_client=train_one_client,
    evaluate=evaluate,
    load_server=load_server,
    sections={"moons": MoonsOptions},
)
