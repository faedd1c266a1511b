"""The ``mf`` task: federated collaborative filtering on MovieLens (FCF, Ammad-ud-din et al.
2019), one user per client or, cross-silo, several users per client.

Biased matrix factorisation: ``r_hat(u, i) = mu + b_u + b_i + p_u . q_i``. The item factors
``q``, item biases ``b_i`` and ``mu`` are the shared model. A user's factors ``p_u`` and bias
``b_u`` are the client's *local* state: they live in the node's ``Context.state`` and never
appear in a message (the algorithm's ``context.local``).

The task is an algorithm on typed statistics (:mod:`fedcore.tasks.algorithm`): a client trains
on its own ratings and sends the update of the shared arrays, each item row weighted by how
many of its users rated the item (``item-raters``) and the global bias by its number of
ratings, so the server averages each item row over the clients that touched it. Flower's
built-in strategies average identical dense arrays from everyone and cannot weight per row.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedcore import seeding
from fedcore.config import ConfigError, RunConfig
from fedcore.datasets import resolve_data_dir
from fedcore.datasets.movielens import ML100K_ITEMS, Ratings, official_split
from fedcore.keys import TRAIN_LOSS, TRAIN_SECONDS
from fedcore.statistics import INTEGER, ArraySpec, Spec, Summed
from fedcore.tasks.algorithm import Algorithm, RoundContext, dp_denominator
from fedcore.tasks.base import ClientUpdate, FederatedData, ModelShape, ServerData, TrainParams
from fedcore.tasks.options import SECTIONS

MSE, MAE = "mse", "mae"
SHARED = ("item_factors", "item_bias", "global_bias")  # the shared model
RATERS, RATINGS = "item-raters", "ratings"  # the weights: per item row, and of the bias


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

    @functools.cached_property
    def index(self) -> _Index:
        """The training ratings as a dense matrix, built once per client (the data is fixed)."""
        return _Index.of(self.x_train.numpy(), self.y_train.numpy(), self.num_users)


@dataclass(frozen=True)
class _Index:
    """A client's training ratings as a dense (local user x rated item) matrix: ``ratings``
    and ``mask`` (1 where rated). A client's matrix is small (one user: 1 x ~100; a silo of
    ~100 users: 100 x ~1,600), so every step is a few BLAS calls, not a scatter per rating."""

    rated: np.ndarray  # the items rated, sorted: the only item rows a client touches
    ratings: np.ndarray  # float64 (users, items rated), 0 where not rated
    mask: np.ndarray  # float64, 1 where rated
    per_item: np.ndarray  # float64, users who rated each item of ``rated`` (>= 1)
    per_user: np.ndarray  # float64, ratings per local user

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray, num_users: int) -> _Index:
        user, item = x[:, 0], x[:, 1]
        rated, col = np.unique(item, return_inverse=True)
        mask = np.zeros((num_users, len(rated)))
        np.add.at(mask, (user, col), 1.0)
        if mask.size and mask.max() > 1:
            u, i = np.argwhere(mask > 1)[0]
            raise ValueError(f"local user {u} rated item {rated[i]} more than once")
        ratings = np.zeros_like(mask)
        ratings[user, col] = y
        return cls(rated, ratings, mask, mask.sum(axis=0), mask.sum(axis=1))


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
    ix = data.index
    items, item_bias = model.item_factors.detach().numpy(), model.item_bias.detach().numpy()
    w = {
        "q": items[ix.rated].astype(np.float64),
        "bi": item_bias[ix.rated].astype(np.float64),
        "p": model.users.numpy().astype(np.float64),
        "bu": model.user_bias.numpy().astype(np.float64),
        "mu": model.global_bias.detach().numpy().astype(np.float64),
    }
    velocity = {name: np.zeros_like(v) for name, v in w.items()}
    decay, n = 2 * params.weight_decay, max(data.num_train, 1)
    # each parameter's gradient is averaged over the ratings that touch it: a user with 700
    # ratings would otherwise take 700 times the step of a user with one
    per_item = ix.per_item  # >= 1: only rated items are rows here
    per_user = np.maximum(ix.per_user, 1.0)
    mse = 0.0
    for _ in range(params.epochs):
        q, bi, p, bu = w["q"], w["bi"], w["p"], w["bu"]
        error = (w["mu"] + bu[:, None] + bi[None, :] + p @ q.T - ix.ratings) * ix.mask
        mse = float(np.vdot(error, error)) / n
        g = 2.0 * error  # d loss / d prediction (a sum over ratings, as per-rating SGD)
        grads = {
            "q": (g.T @ p + decay * per_item[:, None] * q) / per_item[:, None],
            "bi": (g.sum(axis=0) + decay * per_item * bi) / per_item,
            "p": (g @ q + decay * ix.per_user[:, None] * p) / per_user[:, None],
            "bu": (g.sum(axis=1) + decay * ix.per_user * bu) / per_user,
            "mu": np.array([g.sum() / n]),
        }
        for name, grad in grads.items():
            velocity[name] *= params.momentum
            velocity[name] += grad
            w[name] -= params.lr * velocity[name]
    model.users = torch.from_numpy(w["p"].astype(np.float32))
    model.user_bias = torch.from_numpy(w["bu"].astype(np.float32))
    state = {name: t.detach().clone() for name, t in model.state_dict().items()}
    state["item_factors"].numpy()[ix.rated] = w["q"]
    state["item_bias"].numpy()[ix.rated] = w["bi"]
    state["global_bias"].numpy()[:] = w["mu"]
    raters = torch.zeros(len(item_bias))
    raters.numpy()[ix.rated] = ix.per_item
    state[RATERS] = raters
    metrics = {TRAIN_LOSS: mse, TRAIN_SECONDS: time.perf_counter() - start}
    return ClientUpdate(state=state, num_examples=data.num_train, metrics=metrics)


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
        if d.num_clients > train.num_users:
            raise ConfigError(
                f"data.num-clients = {d.num_clients} silos of {train.num_users} users would "
                "leave some silos empty"
            )
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


def build_model(cfg: RunConfig, data: ModelShape, g: torch.Generator) -> MatrixFactorization:
    # the global mean starts at 3.5 (the scale's middle-high), not at the data's mean: that
    # would be a statistic of every user's ratings, which the server does not have
    return MatrixFactorization(data.num_features, cfg.model.hidden[0], 3.5, g)


def load_mf_server(cfg: RunConfig) -> ServerData:
    """The server's data: the item count of ML-100K (public); no rating is read, and the
    server never evaluates (the users' factors stay on their nodes: see the rules)."""
    return ServerData(ML100K_ITEMS, 0)


# -- the task as an algorithm on typed statistics -------------------------------------------


@functools.lru_cache(maxsize=2)
def _worker_model(cfg: RunConfig) -> MatrixFactorization:
    """The one model object a process trains; its arrays are overwritten on every call."""
    return build_model(cfg, load_mf_data(cfg), torch.Generator().manual_seed(0))


def _model(cfg: RunConfig, state, data: MfClientData, context: RoundContext):
    """The worker model holding the shared ``state`` and this client's user factors (from
    its local state, or on its first round freshly drawn from its own seeded generator)."""
    model = _worker_model(cfg)
    model.load_state_dict({k: torch.tensor(np.asarray(state[k])) for k in SHARED})
    if context.local:
        set_local(model, data, {k: torch.from_numpy(v) for k, v in context.local.items()}, None)
    else:
        init = seeding.torch_generator(cfg.seed, seeding.MODEL_INIT, context.partition_id)
        set_local(model, data, None, init)
    return model


def _dp(cfg: RunConfig) -> bool:
    return cfg.privacy.dp != "off"


def _init(cfg: RunConfig, data: ModelShape, rng: np.random.Generator) -> dict:
    model = build_model(cfg, data, seeding.torch_generator(cfg.seed, seeding.MODEL_INIT))
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _spec(cfg: RunConfig, state) -> Spec:
    """Each item row's update weighted by how many of the client's users rated the item,
    the global bias's by its number of ratings. Under user-level DP nothing but the clipped
    update is sent (the counts would leave un-noised) and every client weighs one. Entries
    are bounded by ``secagg.bound`` under secure aggregation, unbounded otherwise."""
    bound = cfg.secagg.bound if cfg.secagg.mode != "off" else math.inf
    weights = {"item_factors": RATERS, "item_bias": RATERS, "global_bias": RATINGS}
    arrays = {
        k: ArraySpec(np.shape(state[k]), bound=bound, weight=None if _dp(cfg) else weights[k])
        for k in SHARED
    }
    if not _dp(cfg):
        count = cfg.secagg.max_weight if cfg.secagg.mode != "off" else math.inf
        items = np.shape(state["item_bias"])
        arrays[RATERS] = ArraySpec(items, INTEGER, count)
        arrays[RATINGS] = ArraySpec((), INTEGER, count)
    return Spec.of(arrays)


def _train_client(state, data: MfClientData, context: RoundContext, rng: np.random.Generator):
    """Train the client's users and the item rows they rated; send the shared arrays'
    update and the counts that weigh it; keep the user factors in the local state."""
    cfg, t = context.cfg, context.cfg.train
    model = _model(cfg, state, data, context)
    params = TrainParams(t.local_epochs, t.batch_size, t.lr, t.momentum, t.weight_decay)
    generator = seeding.client_generator(cfg.seed, context.server_round, context.partition_id)
    update = train_one_client(model, data, params, generator)
    context.local.update({k: v.numpy() for k, v in get_local(model).items()})
    stats = {
        k: update.state[k].numpy().astype(np.float64) - np.asarray(state[k], np.float64)
        for k in SHARED
    }
    if not _dp(cfg):
        stats[RATERS] = update.state[RATERS].numpy().astype(np.float64)
        stats[RATINGS] = np.array(float(data.num_train))
    return stats, update.metrics


def _server(state, summed: Summed, cfg: RunConfig):
    """Each item row moved by its raters' mean update (rows nobody rated stay), the bias by
    the mean weighted by ratings, all times ``strategy.server-lr``. Under user-level DP the
    noised sum over the planned cohort (client-level and distributed DP: a client then moves
    the model by at most clip / cohort) or over the clients in the sum (local DP)."""
    new = {}
    for k in SHARED:
        current = np.asarray(state[k])
        if _dp(cfg):
            step = summed[k] / dp_denominator(cfg, summed)
        else:
            step = np.nan_to_num(summed.mean(k), nan=0.0)
        new[k] = (current + cfg.strategy.server_lr * step).astype(current.dtype)
    return new, {}


def _evaluate_client(state, data: MfClientData, context: RoundContext) -> dict[str, float]:
    return evaluate(_model(context.cfg, state, data, context), data.x_test, data.y_test)


def check_config(cfg: RunConfig) -> None:
    """ConfigError naming the setting unless ``cfg`` fits federated collaborative filtering."""
    if cfg.data.dataset != "ml-100k" or cfg.data.partition not in ("natural", "iid"):
        raise ConfigError(
            "task 'mf' reads data.dataset = 'ml-100k' with data.partition = 'natural' "
            "(one user per client) or 'iid' (random silos of users)"
        )
    if cfg.evaluate.server:
        raise ConfigError(
            "task 'mf' needs evaluate.server = false: the users' factors never leave "
            "their clients, so only the clients can predict their ratings"
        )
    if len(cfg.model.hidden) != 1 or cfg.strategy.name != "fedavg":
        raise ConfigError(
            "task 'mf' takes model.hidden = [dimension] and strategy 'fedavg' (its item "
            "rows are averaged over the clients that rated them)"
        )
    if cfg.privacy.dp in ("sample", "sample-distributed"):
        raise ConfigError(
            "task 'mf' takes user-level DP (privacy.dp = 'local', 'distributed' or "
            f"'client'), not {cfg.privacy.dp!r}: a user's ratings are one unit of privacy"
        )
    if cfg.privacy.dp == "local" and cfg.secagg.mode != "off":
        raise ConfigError(
            "task 'mf' takes secure aggregation or local DP, not both: local DP noises each "
            "update for release in the clear; under secure aggregation use privacy.dp = "
            "'distributed', where each client adds only its share of the noise"
        )


ALGORITHM = Algorithm(
    name="mf",
    load_data=load_mf_data,
    init=_init,
    spec=_spec,
    client=_train_client,
    server=_server,
    evaluate_client=_evaluate_client,
    check_config=check_config,
    load_server=load_mf_server,
    sections=SECTIONS["mf"],
    node_state=True,
)


TASK = ALGORITHM
