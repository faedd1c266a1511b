"""The GCN itself: Kipf & Welling's two graph convolutions over a :class:`GraphView`, and its
local training (FedAvg's client step, and their centralized recipe).

The model sees a :class:`GraphView` (inputs, propagation matrices, target rows); a view is
built per client from its own data, so no normalised adjacency is cached on the model and
reused across clients (the trap of a ``cached=True`` GCNConv shared by clients).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from fedcore.config import RunConfig
from fedcore.datasets.planetoid import Graph
from fedcore.keys import ACCURACY, LOSS, TRAIN_LOSS, TRAIN_SECONDS
from fedcore.tasks.base import ClientUpdate, ModelShape, TrainParams


@dataclass(frozen=True)
class GraphView:
    """What the GCN sees: input rows, how to propagate them, and which output rows count.

    Attributes:
        x: input rows (R, F), sparse or dense: raw features, or already propagated ones
            (``first`` is None).
        first: sparse (R, R) propagation of layer 1, or None if ``x`` is propagated.
        second: sparse (T, R) propagation of layer 2; its T rows are the outputs.
        target: positions among the T outputs whose labels are scored.
    """

    x: torch.Tensor
    first: torch.Tensor | None
    second: torch.Tensor
    target: torch.Tensor

    def __len__(self) -> int:
        return len(self.target)

    def with_target(self, target: torch.Tensor) -> GraphView:
        return GraphView(self.x, self.first, self.second, target)


@dataclass(frozen=True)
class GraphClientData:
    """One client's graph data, in the shape the ClientApp handlers expect."""

    x_train: GraphView
    y_train: torch.Tensor
    x_test: GraphView
    y_test: torch.Tensor
    optimizer: str = "sgd"

    @property
    def num_train(self) -> int:
        return len(self.y_train)


def normalized_adjacency(edges: np.ndarray, num_nodes: int) -> torch.Tensor:
    """``D^-1/2 (A + I) D^-1/2`` as a sparse (N, N) tensor, from undirected ``edges`` (each
    once); PyG's ``gcn_norm`` computes the weights."""
    both = np.concatenate([edges, edges[::-1]], axis=1)
    index = torch.from_numpy(both).long()
    index, weight = gcn_norm(index, None, num_nodes, add_self_loops=True)
    shape = (num_nodes, num_nodes)
    return torch.sparse_coo_tensor(index.flip(0), weight, shape, check_invariants=True).coalesce()


class GCN(nn.Module):
    """Two graph convolutions (Kipf & Welling 2017): ``P2 relu(P1 X W1 + b1) W2 + b2``,
    with dropout on the inputs of both, P1 and P2 taken from the :class:`GraphView`."""

    def __init__(
        self, num_features: int, hidden: int, num_classes: int, dropout: float, g: torch.Generator
    ) -> None:
        super().__init__()
        self.lin1 = nn.Linear(num_features, hidden, bias=False)
        self.bias1 = nn.Parameter(torch.zeros(hidden))
        self.lin2 = nn.Linear(hidden, num_classes, bias=False)
        self.bias2 = nn.Parameter(torch.zeros(num_classes))
        self.dropout = dropout
        with torch.no_grad():  # Glorot uniform, as Kipf & Welling, from an explicit generator
            for lin in (self.lin1, self.lin2):
                bound = math.sqrt(6.0 / (lin.in_features + lin.out_features))
                lin.weight.uniform_(-bound, bound, generator=g)

    def forward(self, view: GraphView) -> torch.Tensor:
        x = view.x
        if x.is_sparse:  # bag-of-words features: dropout and product on the nonzeros only
            values = F.dropout(x.values(), self.dropout, self.training)
            x = torch.sparse_coo_tensor(
                x.indices(), values, x.shape, is_coalesced=True, check_invariants=False
            )
            h = torch.sparse.mm(x, self.lin1.weight.T)
        else:
            h = self.lin1(F.dropout(x, self.dropout, self.training))
        if view.first is not None:
            h = torch.sparse.mm(view.first, h)
        h = F.relu(h + self.bias1)
        h = self.lin2(F.dropout(h, self.dropout, self.training))
        return torch.sparse.mm(view.second, h) + self.bias2


def build_model(cfg: RunConfig, data: ModelShape, g: torch.Generator) -> GCN:
    return GCN(data.num_features, cfg.model.hidden[0], data.num_classes, cfg.model.dropout, g)


def train_one_client(
    model: GCN, data: GraphClientData, params: TrainParams, rng: torch.Generator
) -> ClientUpdate:
    """``params.epochs`` full-batch steps on the client's labelled nodes (a client with
    none sends its model back with weight 0). SGD by default, as FedGCN: Adam's state, reset
    every round, learns slower under FedAvg; ``graph.optimizer = "adam"`` is Kipf & Welling's.
    Weight decay applies to the first layer only, as in Kipf & Welling."""
    start = time.perf_counter()
    model.train()
    optimizer = _optimizer(model, data.optimizer, params)
    losses = []
    if data.num_train > 0:
        with torch.random.fork_rng(devices=[]):  # dropout masks from the client's generator
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=rng)))
            for _ in range(params.epochs):
                optimizer.zero_grad()
                logits = model(data.x_train)[data.x_train.target]
                loss = F.cross_entropy(logits, data.y_train)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    metrics = {TRAIN_SECONDS: time.perf_counter() - start}
    if losses:
        metrics[TRAIN_LOSS] = float(np.mean(losses))
    return ClientUpdate(state=state, num_examples=data.num_train, metrics=metrics)


def _optimizer(model: GCN, name: str, params: TrainParams) -> torch.optim.Optimizer:
    groups = [
        {"params": [model.lin1.weight, model.bias1], "weight_decay": params.weight_decay},
        {"params": [model.lin2.weight, model.bias2], "weight_decay": 0.0},
    ]
    if name == "adam":
        return torch.optim.Adam(groups, lr=params.lr)
    return torch.optim.SGD(groups, lr=params.lr, momentum=params.momentum)


def train_kipf(
    model: GCN, view: GraphView, graph: Graph, g: torch.Generator, patience: int = 10
) -> int:
    """Kipf & Welling's recipe on one whole graph: Adam (lr 0.01, weight decay 5e-4 on the
    first layer) for up to 200 epochs, stopped early as their ``gcn`` repository does: once
    the validation loss exceeds the mean of the previous ``patience`` (10). Returns the
    epochs run."""
    y = torch.from_numpy(graph.y)
    train, val = torch.from_numpy(graph.train), torch.from_numpy(graph.val)
    optimizer = _optimizer(model, "adam", TrainParams(1, 1, 0.01, weight_decay=5e-4))
    val_losses: list[float] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=g)))
        for epoch in range(1, 201):
            model.train()
            optimizer.zero_grad()
            F.cross_entropy(model(view)[train], y[train]).backward()
            optimizer.step()
            val_losses.append(evaluate(model, view.with_target(val), y[val])[LOSS])
            if epoch > patience and val_losses[-1] > np.mean(val_losses[-patience - 1 : -1]):
                return epoch
    return 200


@torch.no_grad()
def evaluate(model: GCN, view: GraphView, y: torch.Tensor) -> dict[str, float]:
    """Loss and accuracy on the view's target nodes."""
    if len(y) == 0:
        return {}
    model.eval()
    logits = model(view)[view.target]
    return {
        LOSS: float(F.cross_entropy(logits, y)),
        ACCURACY: float((logits.argmax(dim=1) == y).float().mean()),
    }
