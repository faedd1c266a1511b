"""What each client holds and trains on: its :class:`GraphPart` of the graph, its
:class:`~fedcore.tasks.gcn.model.GraphView` after local subgraphs or after the
pre-communication, and the whole graph for the server."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedcore.datasets.planetoid import Graph
from fedcore.tasks.gcn.model import GraphClientData, GraphView, normalized_adjacency


@dataclass(frozen=True)
class GraphPart:
    """One client's part of a graph: its nodes, their features and labels, and the edges
    incident to them. The owner of a node knows who its neighbours are, not their features;
    everything a client computes (its share of the pre-communication, its views) reads only
    this.

    Attributes:
        num_nodes: nodes in the whole graph (public: the ids' range).
        nodes: the owned node ids, sorted.
        x: their features, (len(nodes), F), in the order of ``nodes``.
        y: their classes, in the same order.
        edges: undirected edges with at least one owned end, (2, E), each once.
        train, test: the owned nodes of the standard split.
    """

    num_nodes: int
    nodes: np.ndarray
    x: np.ndarray
    y: np.ndarray
    edges: np.ndarray
    train: np.ndarray
    test: np.ndarray

    @property
    def num_features(self) -> int:
        return self.x.shape[1]


def graph_part(graph: Graph, nodes: np.ndarray) -> GraphPart:
    """The part of ``graph`` that the owner of ``nodes`` holds."""
    nodes = np.sort(np.asarray(nodes, np.int64))
    owned = np.zeros(graph.num_nodes, bool)
    owned[nodes] = True
    incident = owned[graph.edges[0]] | owned[graph.edges[1]]
    return GraphPart(
        num_nodes=graph.num_nodes,
        nodes=nodes,
        x=graph.x[nodes],
        y=graph.y[nodes],
        edges=graph.edges[:, incident],
        train=graph.train[owned[graph.train]],
        test=graph.test[owned[graph.test]],
    )


def incident_edges(part: GraphPart) -> tuple[np.ndarray, np.ndarray]:
    """Every (u, v) with u owned and v a neighbour of u or u itself: the edges of (A + I)
    that the owner of ``part`` knows."""
    owned = np.zeros(part.num_nodes, bool)
    owned[part.nodes] = True
    src = np.concatenate([part.edges[0], part.edges[1], part.nodes])
    dst = np.concatenate([part.edges[1], part.edges[0], part.nodes])
    keep = owned[src]
    return src[keep], dst[keep]


def own_degrees(part: GraphPart) -> np.ndarray:
    """``1 + degree`` of every owned node (0 elsewhere): the owner knows its nodes' edges."""
    src, _ = incident_edges(part)
    return np.bincount(src, minlength=part.num_nodes).astype(np.float64)


def _sparse(x: np.ndarray) -> torch.Tensor:
    """Sparse if mostly zeros (bag-of-words rows), dense otherwise (noised aggregates)."""
    x = np.ascontiguousarray(x, np.float32)
    dense = torch.from_numpy(x if x.flags.writeable else x.copy())  # a kept release is read-only
    return dense.to_sparse().coalesce() if np.count_nonzero(x) < 0.1 * x.size else dense


def _positions_of(part: GraphPart) -> np.ndarray:
    position = np.full(part.num_nodes, -1, np.int64)
    position[part.nodes] = np.arange(len(part.nodes))
    return position


def _induced(part: GraphPart, position: np.ndarray) -> np.ndarray:
    """The edges among the owned nodes, renumbered to positions in ``part.nodes``."""
    keep = (position[part.edges[0]] >= 0) & (position[part.edges[1]] >= 0)
    return position[part.edges[:, keep]]


def _split_targets(part: GraphPart, position: np.ndarray, view: GraphView) -> GraphClientData:
    train, test = torch.from_numpy(position[part.train]), torch.from_numpy(position[part.test])
    y = torch.from_numpy(part.y)
    return GraphClientData(view.with_target(train), y[train], view.with_target(test), y[test])


def local_client(part: GraphPart) -> GraphClientData:
    """FedAvg on the induced subgraph: both layers propagate over local edges only."""
    position = _positions_of(part)
    adj = normalized_adjacency(_induced(part, position), len(part.nodes))
    view = GraphView(_sparse(part.x), adj, adj, torch.arange(0))
    return _split_targets(part, position, view)


def view_rows(part: GraphPart, hops: int) -> np.ndarray:
    """The rows of the pre-communication a client trains on: its own nodes (1 hop), then,
    with 2 hops, their neighbours (in this order)."""
    if hops == 1:
        return part.nodes
    _, dst = incident_edges(part)
    return np.concatenate([part.nodes, np.setdiff1d(np.unique(dst), part.nodes)])


def precomm_view(part: GraphPart, ax: np.ndarray, d: np.ndarray, hops: int) -> GraphClientData:
    """A client after pre-communication, from the rows ``ax`` and degrees ``d`` of
    :func:`view_rows`: layer 1 from the complete aggregates; layer 2 over the local subgraph
    (1 hop) or over every neighbour with their aggregates (2 hops)."""
    position = _positions_of(part)
    if hops == 1:
        edges = _induced(part, position)
        view = GraphView(
            _sparse(ax), None, normalized_adjacency(edges, len(part.nodes)), torch.arange(0)
        )
        return _split_targets(part, position, view)
    rows = view_rows(part, hops)
    column = np.full(part.num_nodes, -1, np.int64)
    column[rows] = np.arange(len(rows))
    degree = np.zeros(part.num_nodes)
    degree[rows] = d
    src, dst = incident_edges(part)  # rows: own nodes; columns: them and their neighbours
    weight = 1.0 / np.sqrt(degree[src] * degree[dst])
    second = torch.sparse_coo_tensor(
        torch.from_numpy(np.stack([position[src], column[dst]])),
        torch.from_numpy(weight.astype(np.float32)),
        (len(part.nodes), len(rows)),
        check_invariants=True,
    ).coalesce()
    view = GraphView(_sparse(ax), None, second, torch.arange(0))
    return _split_targets(part, position, view)


def full_view(graph: Graph) -> GraphView:
    """The whole graph (the centralized baseline and the server's evaluation)."""
    adj = normalized_adjacency(graph.edges, graph.num_nodes)
    return GraphView(_sparse(graph.x), adj, adj, torch.from_numpy(graph.test))
