"""The ``mf`` task: federated collaborative filtering on MovieLens (FCF, Ammad-ud-din et al.
2019), one user per client or, cross-silo, several users per client.

Biased matrix factorisation: ``r_hat(u, i) = mu + b_u + b_i + p_u . q_i``. The item factors
``q``, item biases ``b_i`` and ``mu`` are the shared model. A user's factors ``p_u`` and bias
``b_u`` are the client's *local* state: they live in the node's ``Context.state`` and never
appear in a message (the handlers keep them there through :attr:`Task.local_state`).

A client trains on its own ratings and sends back the shared arrays plus ``item-raters``,
how many of its users rated each item, so the server can average each item row over the
clients that touched it (:class:`strategies.items.ItemFedAvg`).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedcore import seeding
from fedcore.config import ConfigError, RunConfig
from fedcore.datasets import resolve_data_dir
from fedcore.datasets.movielens import Ratings, official_split
from fedcore.keys import TRAIN_LOSS, TRAIN_SECONDS
from fedcore.tasks.base import ClientUpdate, FederatedData, Task, TrainParams

ITEM_RATERS = "item-raters"  # extra array of a reply: users of the client who rated each item
MSE, MAE = "mse", "mae"


@dataclass(frozen=True)
class MfClientData:
    """One client's ratings: ``x`` rows are (local user index, item), ``y`` the ratings."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_users: int

    @property
    def num_train(self) -> int:
        return len(self.y_train)


class MatrixFactorization(nn.Module):
    """The shared part of biased MF; the current client's user factors are attached as plain
    tensors (``users``, ``user_bias``), so they are neither in ``state_dict`` nor sent."""

    def __init__(self, num_items: int, dim: int, mean: float, g: torch.Generator) -> None:
        super().__init__()
        self.item_factors = nn.Parameter(0.1 * torch.randn(num_items, dim, generator=g))
        self.item_bias = nn.Parameter(torch.zeros(num_items))
        self.global_bias = nn.Parameter(torch.tensor([mean]))
        self.users = torch.zeros(0, dim)
        self.user_bias = torch.zeros(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, i = x[:, 0], x[:, 1]
        dot = (self.users[u] * self.item_factors[i]).sum(dim=1)
        return self.global_bias + self.user_bias[u] + self.item_bias[i] + dot


def set_local(model: MatrixFactorization, data: MfClientData, state: dict | None, g) -> None:
    """Attach this client's user factors: from its saved state, or freshly initialised."""
    dim = model.item_factors.shape[1]
    if state is None:
        state = {
            "users": 0.1 * torch.randn(data.num_users, dim, generator=g),
            "user_bias": torch.zeros(data.num_users),
        }
    model.users, model.user_bias = state["users"].clone(), state["user_bias"].clone()


def get_local(model: MatrixFactorization) -> dict[str, torch.Tensor]:
    return {"users": model.users.detach().clone(), "user_bias": model.user_bias.detach().clone()}


def train_one_client(
    model: MatrixFactorization, data: MfClientData, params: TrainParams, rng: torch.Generator
) -> ClientUpdate:
    """``params.epochs`` full-batch gradient steps (with momentum) on the squared error of
    the client's ratings plus ``params.weight_decay`` times the squared norms of the factors
    and biases each rating touches, each parameter's gradient averaged over its ratings. The
    gradient is written out by hand, in numpy, on the rows the client rated only: autograd
    over the whole item table cost 5x more, and torch's per-call overhead dominates at a
    hundred ratings."""
    start = time.perf_counter()
    local_user, item = data.x_train[:, 0].numpy(), data.x_train[:, 1].numpy()
    ratings = data.y_train.numpy().astype(np.float64)
    rated, row = np.unique(item, return_inverse=True)  # the item rows this client touches
    k, users = len(rated), len(model.user_bias)
    with torch.no_grad():
        w = {
            "q": model.item_factors.numpy()[rated].astype(np.float64),
            "bi": model.item_bias.numpy()[rated].astype(np.float64),
            "p": model.users.numpy().astype(np.float64),
            "bu": model.user_bias.numpy().astype(np.float64),
            "mu": model.global_bias.numpy().astype(np.float64),
        }
    velocity = {name: np.zeros_like(v) for name, v in w.items()}
    decay = 2 * params.weight_decay
    # each parameter's gradient is averaged over the ratings that touch it: a user with 700
    # ratings would otherwise take 700 times the step of a user with one
    per_item = np.maximum(np.bincount(row, minlength=k), 1).astype(np.float64)
    per_user = np.maximum(np.bincount(local_user, minlength=users), 1).astype(np.float64)
    mse = 0.0
    for _ in range(params.epochs):
        q, bi, p, bu = w["q"], w["bi"], w["p"], w["bu"]
        pu, qi = p[local_user], q[row]
        error = w["mu"] + bu[local_user] + bi[row] + (pu * qi).sum(axis=1) - ratings
        mse = float(np.mean(error**2)) if len(error) else 0.0
        g = 2.0 * error  # d loss / d prediction (a sum over ratings, as per-rating SGD)
        grads = {
            "q": _scatter(row, g[:, None] * pu + decay * qi, k) / per_item[:, None],
            "bi": np.bincount(row, g + decay * bi[row], minlength=k) / per_item,
            "p": _scatter(local_user, g[:, None] * qi + decay * pu, users) / per_user[:, None],
            "bu": np.bincount(local_user, g + decay * bu[local_user], minlength=users) / per_user,
            "mu": np.array([g.mean()]) if len(g) else np.zeros(1),
        }
        for name, grad in grads.items():
            velocity[name] = params.momentum * velocity[name] + grad
            w[name] -= params.lr * velocity[name]
    with torch.no_grad():
        model.item_factors[torch.from_numpy(rated)] = torch.from_numpy(w["q"]).float()
        model.item_bias[torch.from_numpy(rated)] = torch.from_numpy(w["bi"]).float()
        model.global_bias.copy_(torch.from_numpy(w["mu"]).float())
    model.users = torch.from_numpy(w["p"]).float()
    model.user_bias = torch.from_numpy(w["bu"]).float()
    raters = torch.zeros(model.item_bias.shape[0])
    pairs = torch.unique(data.x_train, dim=0)
    raters.index_add_(0, pairs[:, 1], torch.ones(len(pairs)))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state[ITEM_RATERS] = raters
    metrics = {TRAIN_LOSS: mse, TRAIN_SECONDS: time.perf_counter() - start}
    return ClientUpdate(state=state, num_examples=data.num_train, metrics=metrics)


def _scatter(index: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """Row sums ``out[index[j]] += values[j]`` for 2-D ``values``, via one bincount."""
    dim = values.shape[1]
    flat = (index[:, None] * dim + np.arange(dim)).ravel()
    return np.bincount(flat, values.ravel(), minlength=size * dim).reshape(size, dim)


@torch.no_grad()
def evaluate(model: MatrixFactorization, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Mean squared and absolute error (predictions clipped to the 1-5 scale)."""
    if len(y) == 0:
        return {}
    error = model(x).clamp(1.0, 5.0) - y
    return {MSE: float(error.pow(2).mean()), MAE: float(error.abs().mean())}


def _client(train: Ratings, test: Ratings, users: np.ndarray) -> MfClientData:
    local = np.full(train.num_users, -1, np.int64)
    local[users] = np.arange(len(users))

    def rows(r: Ratings):
        keep = local[r.users] >= 0
        x = np.stack([local[r.users[keep]], r.items[keep]], axis=1)
        return torch.from_numpy(x), torch.from_numpy(r.ratings[keep])

    return MfClientData(*rows(train), *rows(test), num_users=len(users))


@functools.lru_cache(maxsize=4)
def load_mf_data(cfg: RunConfig) -> FederatedData:
    """The users of ML-100K split ``data.split`` grouped into ``data.num-clients`` clients:
    one user each with ``data.partition = "natural"``, else random silos."""
    d = cfg.data
    train, test = official_split(resolve_data_dir(d.data_dir or None), d.split, download=d.download)
    users = np.arange(train.num_users)
    if d.partition == "natural":
        if d.num_clients != train.num_users:
            raise ConfigError(
                f"data.partition = 'natural' is one user per client: data.num-clients must be "
                f"{train.num_users}, not {d.num_clients}"
            )
        groups = [users[i : i + 1] for i in users]
    else:
        rng = seeding.numpy_rng(cfg.seed, seeding.PARTITION)
        groups = [np.sort(g) for g in np.array_split(rng.permutation(users), d.num_clients)]
    clients = tuple(_client(train, test, g) for g in groups)
    report = {
        "dataset": "ml-100k",
        "split": d.split,
        "num_clients": len(clients),
        "users_per_client": [len(g) for g in groups],
        "train_ratings": [c.num_train for c in clients],
    }
    x = torch.from_numpy(np.stack([test.users, test.items], axis=1))
    return FederatedData(
        clients=clients,
        x_test=x,
        y_test=torch.from_numpy(test.ratings),
        num_features=train.num_items,
        num_classes=0,
        report=report | {"mean_rating": float(train.ratings.mean())},
    )


def build_model(cfg: RunConfig, data: FederatedData, g: torch.Generator) -> MatrixFactorization:
    # the global mean starts at 3.5 (the scale's middle-high), not at the data's mean: that
    # would be a statistic of every user's ratings, which the server does not have
    return MatrixFactorization(data.num_features, cfg.model.hidden[0], 3.5, g)


TASK = Task(
    name="mf",
    load_data=load_mf_data,
    build_model=build_model,
    train_one_client=train_one_client,
    evaluate=evaluate,
    train_one_client_dp=None,
    local_state=(get_local, set_local),
)
