"""The ``gcn`` task: Kipf & Welling's 2-layer GCN, federated over subgraphs of one graph.

Each client owns some nodes of a Planetoid graph and the edges incident to them. Two modes
(``graph.mode``):

- ``local``: FedAvg on each client's induced subgraph; cross-client edges are lost.
- ``precomm``: FedGCN's pre-communication (Yao et al. 2023). Before training, every client
  contributes, for every node, the sum of its own neighbours' degree-scaled features (and
  their count), and the server obtains the total through secure aggregation
  (:func:`privacy.secagg.protocol.secure_sum`): no party sees another client's raw features.
  With ``graph.hops = 1`` a client gets the complete first-layer aggregate of its nodes; with
  ``hops = 2`` also that of their neighbours, so both layers of the GCN see the whole graph.

The model sees a :class:`GraphView` (inputs, propagation matrices, target rows); a view is
built per client from its own data, so no normalised adjacency is cached on the model and
reused across clients (the trap of a ``cached=True`` GCNConv shared by clients).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch
from torch import nn
from torch.nn import functional as F
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from fedcore import seeding
from fedcore.config import ConfigError, RunConfig
from fedcore.datasets import resolve_data_dir
from fedcore.datasets.planetoid import Graph, load_planetoid
from fedcore.graph_partition import graph_report, split_nodes
from fedcore.keys import ACCURACY, LOSS, TRAIN_LOSS, TRAIN_SECONDS
from fedcore.tasks.base import ClientUpdate, FederatedData, Task, TrainParams

# Secure aggregation of the neighbour sums: entries are degree-scaled features (<= max degree)
# and neighbour counts; 12 fraction bits keep the counts exact after rounding.
_PRECOMM_BOUND, _PRECOMM_FRAC_BITS = 1024.0, 12
# Node-level feature DP is replace-one neighbouring (one node's features by any others), which
# the ledger calls "local": the sensitivity is twice the clip norm.
_NODE = "node"


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


def _sparse(x: np.ndarray) -> torch.Tensor:
    """Sparse if mostly zeros (bag-of-words rows), dense otherwise (noised aggregates)."""
    dense = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    return dense.to_sparse().coalesce() if np.count_nonzero(x) < 0.1 * x.size else dense


def _induced(graph: Graph, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The edges among ``nodes``, renumbered to positions in ``nodes`` (sorted)."""
    position = np.full(graph.num_nodes, -1, np.int64)
    position[nodes] = np.arange(len(nodes))
    keep = (position[graph.edges[0]] >= 0) & (position[graph.edges[1]] >= 0)
    return position[graph.edges[:, keep]], position


def _positions(members: np.ndarray, position: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(position[members[position[members] >= 0]])


def _split_targets(graph: Graph, nodes: np.ndarray, position: np.ndarray, view: GraphView):
    train = graph.train[np.isin(graph.train, nodes)]
    test = graph.test[np.isin(graph.test, nodes)]
    y = torch.from_numpy(graph.y)
    return GraphClientData(
        view.with_target(_positions(train, position)),
        y[train],
        view.with_target(_positions(test, position)),
        y[test],
    )


def local_client(graph: Graph, nodes: np.ndarray) -> GraphClientData:
    """FedAvg on the induced subgraph: both layers propagate over local edges only."""
    edges, position = _induced(graph, nodes)
    adj = normalized_adjacency(edges, len(nodes))
    view = GraphView(_sparse(graph.x[nodes]), adj, adj, torch.arange(0))
    return _split_targets(graph, nodes, position, view)


def _incident(graph: Graph, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (u, v) with u owned and v a neighbour of u or u itself: the edges of (A + I)
    that the owner of ``nodes`` knows."""
    owned = np.zeros(graph.num_nodes, bool)
    owned[nodes] = True
    src = np.concatenate([graph.edges[0], graph.edges[1], nodes])
    dst = np.concatenate([graph.edges[1], graph.edges[0], nodes])
    keep = owned[src]
    return src[keep], dst[keep]


def clip_features(x: np.ndarray, clip: float) -> np.ndarray:
    """Each row of ``x`` scaled down to L2 norm <= ``clip`` (rows already within it are kept):
    the bound on one node's features that the pre-communication noise is sized for."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x * np.minimum(1.0, clip / np.maximum(norms, 1e-12))


def neighbour_contribution(graph: Graph, nodes: np.ndarray, degree: np.ndarray) -> np.ndarray:
    """Client ``nodes``' share of the pre-communication, shape (N, F + 1): row v holds the
    sum over v's neighbours u owned here (and v itself, if owned) of ``x_u / sqrt(d_u)``,
    and in the last column their count. Summed over clients: ``(A + I) D^-1/2 X`` and ``d``.

    ``degree`` is only read at the owned nodes, whose incident edges the client knows."""
    src, dst = _incident(graph, nodes)  # u: owned neighbour, v: the row it adds to
    n = graph.num_nodes
    adjacency = scipy.sparse.csr_matrix(  # (A + I) restricted to owned columns
        (np.ones(len(src)), (dst, src)), shape=(n, n)
    )
    scaled = np.zeros((n, graph.x.shape[1] + 1))
    scaled[nodes, :-1] = graph.x[nodes] / np.sqrt(degree[nodes])[:, None]
    scaled[nodes, -1] = 1.0
    return np.asarray(adjacency @ scaled)


def share_stddev(noise_multiplier: float, clip: float, num_clients: int) -> float:
    """The std of each client's share of the pre-communication noise: any ``m - 1`` of the
    ``m`` shares sum to std ``noise_multiplier * clip``, so the noise protects a node against
    the server and against any one client, which knows its own share (one client: all)."""
    return noise_multiplier * clip / math.sqrt(max(num_clients - 1, 1))


def precomm_noise_multiplier(cfg: RunConfig) -> float:
    """The noise multiplier of the pre-communication: calibrated with the project's
    accountant for ``graph.precomm-epsilon`` at ``privacy.delta``, or the configured one."""
    g = cfg.graph
    if g.precomm_epsilon == 0:
        return g.precomm_noise_multiplier
    from privacy.accounting import calibrate_noise

    return calibrate_noise(
        g.precomm_epsilon, cfg.privacy.delta, 1.0, 1, cfg.privacy.accountant, "none", _NODE
    )


def precomm_event(cfg: RunConfig):
    """The pre-communication as a :class:`~privacy.ledger.DpEvent` (None without noise).

    One Gaussian release of ``S = (A + I) D^-1/2 clip(X)``: node v's features enter the
    ``d_v`` rows of v and its neighbours, each with weight ``1 / sqrt(d_v)``, so their L2
    sensitivity is ``||x_v - x_v'|| <= 2 * feature-clip`` under replace-one neighbouring (one
    node's features replaced by any others; the graph, hence every degree, is public to the
    release). Every row any party receives, at 1 or 2 hops, is a row of this one release; the
    GCN's propagations after it are post-processing. The run's ledger records it (round 0)."""
    z = precomm_noise_multiplier(cfg)
    if z == 0 or not cfg.graph.precomm_features:
        return None
    from privacy.ledger import DpEvent

    return DpEvent(
        mechanism="gaussian",
        noise_multiplier=z,
        sample_rate=1.0,
        steps=1,
        clip_norm=cfg.graph.feature_clip,
        sampling="none",
        neighbouring=_NODE,
        round=0,
        client=None,
    )


def precomm_report(cfg: RunConfig) -> dict:
    """What the pre-communication released, for the run's partition report: its DP event
    and the epsilon the project's accountant gives it (None: exact aggregates, no bound)."""
    if not cfg.graph.precomm_features:  # nothing about features released: nothing to bound
        return {"event": None, "epsilon": 0.0, "delta": 0.0, "released": "degrees"}
    event = precomm_event(cfg)
    if event is None:
        return {"event": None, "epsilon": None, "delta": None, "released": "exact aggregates"}
    from privacy.accounting import epsilon

    eps = epsilon([event], cfg.privacy.delta, cfg.privacy.accountant)
    released = "noised aggregates"
    return {
        "event": event.to_dict(),
        "epsilon": eps,
        "delta": cfg.privacy.delta,
        "released": released,
    }


def precommunicate(
    graph: Graph,
    parts: list[np.ndarray],
    seed: int,
    *,
    clip: float | None = 1.0,
    noise_multiplier: float | None = None,
    seeded_noise: bool = False,
    features: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """``(D^-1/2 S, d)`` for every node, ``S = (A + I) D^-1/2 clip(X) + noise``, from the
    clients' contributions summed with secure aggregation (the server, which runs it, learns
    these aggregates and nothing else).

    Each client clips its nodes' features to L2 norm ``clip`` (None: unclipped) and adds
    its share of Gaussian noise (:func:`share_stddev`, from the OS CSPRNG unless
    ``seeded_noise``) to its feature columns before masking; the degree column stays exact.
    ``noise_multiplier`` None: the default ``graph.precomm-epsilon``'s calibration; 0:
    the exact aggregates, from which a neighbour reads foreign features. ``features``
    False: only the degree column is summed (the feature rows come back 0)."""
    from privacy.secagg.protocol import secure_sum
    from privacy.secagg.quantize import decode, encode, fixed_point

    if noise_multiplier is None:
        noise_multiplier = precomm_noise_multiplier(RunConfig())

    num_features = graph.x.shape[1]
    if not features:  # the degrees alone: the count column of every contribution
        graph = dataclasses.replace(graph, x=np.zeros((graph.num_nodes, 0)))
        noise_multiplier = 0.0
    if noise_multiplier > 0 and clip is None:
        raise ValueError("precommunicate: noise needs a feature clip (graph.feature-clip)")
    if clip is not None:
        graph = dataclasses.replace(graph, x=clip_features(graph.x, clip))
    degree = 1 + np.bincount(graph.edges.ravel(), minlength=graph.num_nodes)  # with self loop
    fp = fixed_point(len(parts), _PRECOMM_BOUND, _PRECOMM_FRAC_BITS)
    rng = seeding.numpy_rng(seed, seeding.SECAGG, 0)
    std = share_stddev(noise_multiplier, clip or 1.0, len(parts))
    inputs = {}
    for i, nodes in enumerate(parts):
        contribution = neighbour_contribution(graph, nodes, degree)
        if std > 0:
            noise = seeding.noise_rng(seeded_noise, seed, seeding.SECAGG, i)
            contribution[:, :-1] += noise.normal(0.0, std, contribution[:, :-1].shape)
        if np.abs(contribution).max() > _PRECOMM_BOUND:
            raise ValueError(
                f"pre-communication entries exceed the secure-aggregation bound "
                f"{_PRECOMM_BOUND}; lower graph.feature-clip (got {clip})"
            )
        inputs[i + 1] = encode(contribution.ravel(), fp, rng)
    total = decode(secure_sum(inputs, fp, seed=seed), fp).reshape(graph.num_nodes, -1)
    d = np.rint(total[:, -1])
    if not features:
        return np.zeros((graph.num_nodes, num_features), np.float32), d
    return (total[:, :-1] / np.sqrt(d)[:, None]).astype(np.float32), d


def shrink_release(
    ax: np.ndarray,
    own: np.ndarray,
    d: np.ndarray,
    clip: float,
    noise_std: float,
    min_weight: float = 0.01,
) -> np.ndarray:
    """The release's rows as one client estimates them: a prior from its own terms, moved
    toward the release by ``w_r = s_r / (s_r + F sigma^2)``.

    ``own`` is the client's :func:`neighbour_contribution` (its count in the last column).
    The prior imputes row r's foreign terms from its own ones (homophily: the unseen
    neighbours resemble the seen), ``own_r * d_r / count_r``; the release corrects it by
    ``w_r``, a heuristic share of signal in the release's remainder: ``s_r = clip^2 (d_r -
    count_r) / mean(d)`` estimates the energy of the foreign terms (each ``x_v / sqrt(d_v)``,
    ``||x_v|| <= clip``, taken as orthogonal, an unseen ``d_v`` at the mean) and ``F sigma^2``
    is the noise's. No noise:
    ``w = 1``, the release as is; a row with no foreign term: ``w = 0``, exact. The estimate
    reads only public quantities (degrees, clip, noise std) and the client's own data:
    post-processing of the release, no privacy cost. Weights under ``min_weight`` are set to
    0, which keeps bag-of-words rows sparse."""
    foreign = d - own[:, -1]
    signal = clip**2 * foreign / d.mean()
    noise = noise_std**2 * ax.shape[1]
    weight = np.divide(signal, signal + noise, out=np.zeros_like(signal), where=foreign > 0)
    weight[weight < min_weight] = 0.0
    root = np.sqrt(d)[:, None]
    count = own[:, -1]
    extrapolate = np.divide(d, count, out=np.ones_like(d, dtype=float), where=count > 0)
    prior = own[:, :-1] * extrapolate[:, None]
    mixed = prior + weight[:, None] * (ax * root - prior)
    return (mixed / root).astype(np.float32)


def precomm_client(
    graph: Graph,
    nodes: np.ndarray,
    ax: np.ndarray,
    d: np.ndarray,
    hops: int,
    clip: float | None = None,
    noise_std: float = 0.0,
) -> GraphClientData:
    """A client after pre-communication: layer 1 from the complete aggregates ``ax``; layer
    2 over the local subgraph (1 hop) or over every neighbour with their aggregates (2 hops).

    With ``clip`` (the release's feature clip), every row is rebuilt by :func:`shrink_release`
    from the client's own exact terms and the release's remainder weighted by its expected
    signal share; ``noise_std`` is the std of the release's noise per entry."""
    if clip is not None:
        clipped = dataclasses.replace(graph, x=clip_features(graph.x, clip))
        own = neighbour_contribution(clipped, nodes, d)
        ax = shrink_release(ax, own, d, clip, noise_std)
    if hops == 1:
        edges, position = _induced(graph, nodes)
        view = GraphView(
            _sparse(ax[nodes]),
            None,
            normalized_adjacency(edges, len(nodes)),
            torch.arange(0),
        )
        return _split_targets(graph, nodes, position, view)
    src, dst = _incident(graph, nodes)  # rows: own nodes; columns: them and their neighbours
    rows = np.concatenate([nodes, np.setdiff1d(np.unique(dst), nodes)])
    column = np.full(graph.num_nodes, -1, np.int64)
    column[rows] = np.arange(len(rows))
    position = np.full(graph.num_nodes, -1, np.int64)
    position[nodes] = np.arange(len(nodes))
    weight = 1.0 / np.sqrt(d[src] * d[dst])
    second = torch.sparse_coo_tensor(
        torch.from_numpy(np.stack([position[src], column[dst]])),
        torch.from_numpy(weight.astype(np.float32)),
        (len(nodes), len(rows)),
        check_invariants=True,
    ).coalesce()
    view = GraphView(_sparse(ax[rows]), None, second, torch.arange(0))
    return _split_targets(graph, nodes, position, view)


def full_view(graph: Graph) -> GraphView:
    """The whole graph (the centralized baseline and the server's evaluation)."""
    adj = normalized_adjacency(graph.edges, graph.num_nodes)
    return GraphView(_sparse(graph.x), adj, adj, torch.from_numpy(graph.test))


@functools.lru_cache(maxsize=4)
def load_graph_data(cfg: RunConfig) -> FederatedData:
    """The clients' graph views for ``cfg`` (pre-communication included), once per process."""
    d = cfg.data
    graph = load_planetoid(d.dataset, resolve_data_dir(d.data_dir or None), download=d.download)
    rng = seeding.numpy_rng(cfg.seed, seeding.PARTITION)
    try:
        parts = split_nodes(
            d.partition, graph.y, graph.edges, d.num_clients, d.alpha, rng, d.min_size
        )
    except ValueError as err:
        raise ConfigError(
            f"data.partition = {d.partition!r} cannot split {graph.name} into "
            f"data.num-clients = {d.num_clients}: {err}"
        ) from None
    if cfg.graph.mode == "local":
        clients = tuple(local_client(graph, nodes) for nodes in parts)
    else:
        ax, degree = precommunicate(
            graph,
            parts,
            cfg.seed,
            clip=cfg.graph.feature_clip,
            noise_multiplier=precomm_noise_multiplier(cfg),
            seeded_noise=cfg.privacy.seeded_noise,
            features=cfg.graph.precomm_features,
        )
        clip = cfg.graph.feature_clip
        m = len(parts)  # the release's noise: the sum of m shares
        std = share_stddev(precomm_noise_multiplier(cfg), clip, m) * math.sqrt(m)
        if not cfg.graph.precomm_features:
            std = math.inf  # no feature rows: every client keeps its prior
        clients = tuple(
            precomm_client(graph, nodes, ax, degree, cfg.graph.hops, clip, std) for nodes in parts
        )
    if cfg.graph.optimizer != "sgd":
        clients = tuple(dataclasses.replace(c, optimizer=cfg.graph.optimizer) for c in clients)
    report = graph_report(parts, graph.y, graph.edges, graph.num_classes)
    report |= {"dataset": graph.name, "partition": d.partition, "mode": cfg.graph.mode}
    if cfg.graph.mode == "precomm":
        report["precomm"] = precomm_report(cfg)
    return FederatedData(
        clients=clients,
        x_test=full_view(graph),
        y_test=torch.from_numpy(graph.y[graph.test]),
        num_features=graph.x.shape[1],
        num_classes=graph.num_classes,
        report=report,
        privacy_events=tuple(e for e in [precomm_event(cfg)] if e is not None)
        if cfg.graph.mode == "precomm"
        else (),
    )


def build_model(cfg: RunConfig, data: FederatedData, g: torch.Generator) -> GCN:
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


TASK = Task(
    name="gcn",
    load_data=load_graph_data,
    build_model=build_model,
    train_one_client=train_one_client,
    evaluate=evaluate,
    train_one_client_dp=None,  # nodes are not independent samples: see the config check
)
