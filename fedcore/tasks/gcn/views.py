"""What each client trains and predicts on: its :class:`~fedcore.tasks.gcn.model.GraphView`,
after local subgraphs or after the pre-communication, and the whole graph for the server."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from fedcore.datasets.planetoid import Graph
from fedcore.tasks.gcn.model import GraphClientData, GraphView, normalized_adjacency
from fedcore.tasks.gcn.precomm import (
    clip_features,
    incident_edges,
    neighbour_contribution,
    shrink_release,
)


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
    src, dst = incident_edges(graph, nodes)  # rows: own nodes; columns: them and their neighbours
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
